// Adapters in S3 (or any S3-protocol server): s3://bucket/prefix/<name>/adapter_config.json etc.
// Listing is one paginated ListObjectsV2 over the prefix; files are streamed to disk by the disk
// cache. A plain (single-part) ETag is the object's MD5, which the disk cache verifies.
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import {
  ADAPTER_FILES,
  chatTemplateOf,
  isValidAdapterName,
  type AdapterLocation,
  type AdapterSource,
  type RemoteFile,
} from './source.js';

export interface S3Settings {
  endpoint?: string;
  region: string;
  forcePathStyle: boolean;
}

/** S3 settings from LORAPLEX_S3_ENDPOINT / _REGION / _FORCE_PATH_STYLE (credentials: the AWS SDK chain). */
export function s3SettingsFromEnv(env: NodeJS.ProcessEnv = process.env): S3Settings {
  const endpoint = env.LORAPLEX_S3_ENDPOINT || undefined;
  const fps = env.LORAPLEX_S3_FORCE_PATH_STYLE;
  return {
    ...(endpoint ? { endpoint } : {}),
    region: env.LORAPLEX_S3_REGION || 'us-east-1',
    forcePathStyle: fps === undefined ? endpoint !== undefined : fps === 'true' || fps === '1',
  };
}

export function makeS3Client(s: S3Settings): S3Client {
  const cfg: S3ClientConfig = {
    region: s.region,
    forcePathStyle: s.forcePathStyle,
    // S3-protocol servers such as s3rver and MinIO mishandle the SDK's default streaming checksums.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...(s.endpoint ? { endpoint: s.endpoint } : {}),
  };
  return new S3Client(cfg);
}

/** Parses s3://bucket/prefix into bucket and a prefix that is empty or ends with '/'. */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m || !m[1]) throw new Error(`--adapter-s3 must look like s3://bucket/prefix/, got ${url}`);
  const prefix = m[2] ?? '';
  return { bucket: m[1], prefix: prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/` };
}

export class S3Source implements AdapterSource {
  readonly bucket: string;
  readonly prefix: string;

  constructor(
    private readonly client: S3Client,
    url: string,
  ) {
    ({ bucket: this.bucket, prefix: this.prefix } = parseS3Url(url));
  }

  async list(): Promise<AdapterLocation[]> {
    const byName = new Map<string, RemoteFile[]>();
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: this.prefix,
          ...(token ? { ContinuationToken: token } : {}),
        }),
      );
      for (const o of page.Contents ?? []) {
        const parts = (o.Key ?? '').slice(this.prefix.length).split('/');
        if (
          parts.length !== 2 ||
          !isValidAdapterName(parts[0]!) ||
          !(ADAPTER_FILES as readonly string[]).includes(parts[1]!)
        )
          continue;
        const etag = (o.ETag ?? '').replaceAll('"', '');
        const file: RemoteFile = {
          name: parts[1]!,
          size: o.Size ?? 0,
          ...(/^[0-9a-f]{32}$/.test(etag) ? { md5: etag } : {}),
        };
        byName.set(parts[0]!, [...(byName.get(parts[0]!) ?? []), file]);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    const out: AdapterLocation[] = [];
    for (const [name, files] of [...byName].sort(([a], [b]) => a.localeCompare(b))) {
      if (!files.some((f) => f.name === 'adapter_config.json')) continue;
      out.push(await this.describe(name, files));
    }
    return out;
  }

  async lookup(name: string): Promise<AdapterLocation | undefined> {
    if (!isValidAdapterName(name)) return undefined;
    return (await this.list()).find((d) => d.name === name);
  }

  private async describe(name: string, files: RemoteFile[]): Promise<AdapterLocation> {
    const key = (f: string): string => `${this.prefix}${name}/${f}`;
    let chatTemplate: string | undefined;
    if (files.some((f) => f.name === 'tokenizer_config.json')) {
      const obj = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key('tokenizer_config.json') }),
      );
      chatTemplate = chatTemplateOf((await obj.Body?.transformToString('utf8')) ?? '');
    }
    return {
      name,
      path: `s3://${this.bucket}/${this.prefix}${name}`,
      remote: {
        files,
        fetch: async (file, dest) => {
          const obj = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key(file.name) }));
          if (!obj.Body) throw new Error(`s3://${this.bucket}/${key(file.name)} has no body`);
          await pipeline(obj.Body as Readable, createWriteStream(dest));
        },
      },
      ...(chatTemplate !== undefined ? { chatTemplate } : {}),
    };
  }
}
