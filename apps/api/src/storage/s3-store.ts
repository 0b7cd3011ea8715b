// Adapter files in an S3 bucket (AWS or any S3-compatible server). Part URLs of multipart uploads
// are presigned UploadPart requests, so clients send large files straight to the bucket.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { Readable } from 'node:stream';
import type { S3Config } from '../config.js';
import { ApiError, badRequest, objectStoreUnavailable } from '../errors.js';
import type { DescriptorStorage } from '../ports.js';
import {
  checkKey,
  type CompletedPart,
  type ObjectStore,
  type PresignPartOptions,
  type StoredObject,
} from './object-store.js';

export function makeS3Client(cfg: S3Config): S3Client {
  return new S3Client({
    region: cfg.region,
    ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}),
    forcePathStyle: cfg.forcePathStyle,
    // S3-compatible servers (s3rver among them) do not all know the newer checksum headers.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/**
 * S3 down, unreachable or failing (5xx, network errors such as a reset mid-stream, SDK timeouts)
 * rather than refusing the request: a 4xx S3 error and our own ApiErrors are kept as they are.
 * Keys are checked before `guard`, so nothing else of ours throws inside it.
 */
function storeIsDown(e: unknown): boolean {
  if (e instanceof ApiError) return false;
  if (e instanceof S3ServiceException) return (e.$metadata.httpStatusCode ?? 500) >= 500;
  return true;
}

async function guard<T>(what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw storeIsDown(e) ? objectStoreUnavailable(what, e) : e;
  }
}

export class S3Store implements ObjectStore {
  readonly kind = 's3' as const;
  readonly bucket: string;

  constructor(
    private readonly client: S3Client,
    bucket: string,
  ) {
    this.bucket = bucket;
  }

  static fromConfig(cfg: S3Config): S3Store {
    return new S3Store(makeS3Client(cfg), cfg.bucket);
  }

  async put(key: string, body: Readable | Buffer, size: number): Promise<void> {
    checkKey(key);
    return guard('storing an object', async () => {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: checkKey(key), Body: body, ContentLength: size }),
      );
    });
  }

  async get(key: string): Promise<Readable> {
    checkKey(key);
    return guard('reading an object', async () => {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: checkKey(key) }));
      if (!(out.Body instanceof Readable)) throw new Error(`s3 get ${key}: no body`);
      return out.Body;
    });
  }

  async list(prefix: string): Promise<string[]> {
    return (await this.listObjects(prefix)).map((o) => o.key);
  }

  async listObjects(prefix: string): Promise<StoredObject[]> {
    return guard('listing objects', async () => {
      const out: StoredObject[] = [];
      let token: string | undefined;
      do {
        const page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            ...(token ? { ContinuationToken: token } : {}),
          }),
        );
        for (const o of page.Contents ?? [])
          if (o.Key) out.push({ key: o.Key, modifiedAt: o.LastModified ?? new Date(0) });
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    });
  }

  async delete(prefix: string): Promise<void> {
    return guard('deleting objects', async () => {
      const keys = await this.list(prefix);
      for (let i = 0; i < keys.length; i += 1000) {
        const batch = keys.slice(i, i + 1000);
        await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
        );
      }
    });
  }

  async createMultipart(key: string): Promise<string> {
    checkKey(key);
    return guard('starting a multipart upload', async () => {
      const out = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: checkKey(key) }));
      if (!out.UploadId) throw new Error(`s3 create multipart upload ${key}: no upload id`);
      return out.UploadId;
    });
  }

  presignPart(o: PresignPartOptions): Promise<string> {
    const cmd = new UploadPartCommand({
      Bucket: this.bucket,
      Key: checkKey(o.key),
      UploadId: o.uploadId,
      PartNumber: o.partNumber,
    });
    return getSignedUrl(this.client, cmd, { expiresIn: o.expiresInS });
  }

  async completeMultipart(key: string, uploadId: string, parts: CompletedPart[]): Promise<void> {
    checkKey(key);
    return guard('completing a multipart upload', async () => {
      const ordered = [...parts].sort((a, b) => a.partNumber - b.partNumber);
      // Check the parts against what the store received (not every S3-compatible server does).
      const uploaded = await this.listParts(key, uploadId);
      const bare = (e: string): string => e.replace(/"/g, '');
      for (const p of uploaded === undefined ? [] : ordered) {
        const got = uploaded!.get(p.partNumber);
        if (got === undefined || bare(got) !== bare(p.etag)) {
          throw badRequest(
            `part ${p.partNumber} of ${key.split('/').pop()} was not uploaded or its ETag differs`,
            'invalid_part',
          );
        }
      }
      try {
        await this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: checkKey(key),
            UploadId: uploadId,
            MultipartUpload: { Parts: ordered.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
          }),
        );
      } catch (e) {
        // A missing part or a wrong ETag is the client's mistake, reported as S3 reports it.
        if (e instanceof S3ServiceException && (e.$metadata.httpStatusCode ?? 500) < 500) {
          throw badRequest(`completing ${key.split('/').pop()} failed: ${e.name}: ${e.message}`, 'invalid_part');
        }
        throw e;
      }
    });
  }

  /** The parts S3 holds, or undefined from a server without ListParts (S3 itself checks on completion). */
  private async listParts(key: string, uploadId: string): Promise<Map<number, string> | undefined> {
    const out = new Map<number, string>();
    let marker: string | undefined;
    do {
      let r;
      try {
        r = await this.client.send(
          new ListPartsCommand({
            Bucket: this.bucket,
            Key: checkKey(key),
            UploadId: uploadId,
            ...(marker ? { PartNumberMarker: marker } : {}),
          }),
        );
      } catch (e) {
        const status = e instanceof S3ServiceException ? e.$metadata.httpStatusCode : undefined;
        if (status === 405 || status === 501) return undefined;
        throw e;
      }
      for (const p of r.Parts ?? []) if (p.PartNumber !== undefined && p.ETag) out.set(p.PartNumber, p.ETag);
      marker = r.IsTruncated ? r.NextPartNumberMarker : undefined;
    } while (marker);
    return out;
  }

  async abortMultipart(key: string, uploadId: string): Promise<void> {
    checkKey(key);
    return guard('aborting a multipart upload', async () => {
      try {
        await this.client.send(
          new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: checkKey(key), UploadId: uploadId }),
        );
      } catch (e) {
        // Already gone, or a server without AbortMultipartUpload (s3rver answers 405): nothing to abort.
        const status = e instanceof S3ServiceException ? e.$metadata.httpStatusCode : undefined;
        if (!(e instanceof S3ServiceException && (e.name === 'NoSuchUpload' || status === 405 || status === 501)))
          throw e;
      }
    });
  }

  descriptorStorage(storageKey: string): DescriptorStorage {
    return { kind: 's3', bucket: this.bucket, prefix: storageKey.endsWith('/') ? storageKey : `${storageKey}/` };
  }
}
