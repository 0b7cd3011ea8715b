// `loraplex dev --model org/name`: fetches a model from the Hugging Face Hub into a cache directory
// (config.json, generation_config.json, tokenizer files and the safetensors weights, sharded or not).
// HF_TOKEN is sent when set; HF_ENDPOINT replaces https://huggingface.co (a mirror). Each file is
// streamed to a temp file and renamed, so an interrupted download never leaves a partial file.
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export const HUB_ID = /^[A-Za-z0-9][\w.-]{0,95}\/[A-Za-z0-9][\w.-]{0,95}$/;

export interface DownloadOptions {
  cacheDir?: string | undefined;
  env: Record<string, string | undefined>;
  /** Progress lines. */
  log: (line: string) => void;
  revision?: string | undefined;
}

export function defaultCacheDir(env: Record<string, string | undefined>): string {
  return env.LORAPLEX_CACHE_DIR ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'loraplex');
}

const OPTIONAL = ['generation_config.json', 'tokenizer_config.json', 'special_tokens_map.json'];

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Downloads the files of `id` (skipping those already cached) and returns the model directory. */
export async function downloadHubModel(id: string, o: DownloadOptions): Promise<string> {
  if (!HUB_ID.test(id)) throw new Error(`not a Hugging Face model id: ${JSON.stringify(id)} (expected org/name)`);
  const revision = o.revision ?? 'main';
  const dir = join(o.cacheDir ?? defaultCacheDir(o.env), 'hf', `${id.replace('/', '--')}@${revision}`);
  const endpoint = (o.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const headers: Record<string, string> = o.env.HF_TOKEN ? { authorization: `Bearer ${o.env.HF_TOKEN}` } : {};

  const fetchFile = async (name: string, required: boolean): Promise<boolean> => {
    const dest = join(dir, name);
    if (await exists(dest)) return true;
    const url = `${endpoint}/${id}/resolve/${encodeURIComponent(revision)}/${name}`;
    const res = await fetch(url, { headers, redirect: 'follow' });
    if (res.status === 404 && !required) return false;
    if (res.status === 401 || res.status === 403)
      throw new Error(`${url}: ${res.status} (a gated or private model: set HF_TOKEN to a token that has access)`);
    if (!res.ok || !res.body) throw new Error(`${url}: HTTP ${res.status}`);
    await mkdir(dirname(dest), { recursive: true });
    const tmp = `${dest}.part-${process.pid}`;
    const size = Number(res.headers.get('content-length'));
    o.log(
      `downloading ${id}/${name}${Number.isFinite(size) && size > 0 ? ` (${(size / 1048576).toFixed(1)} MiB)` : ''}`,
    );
    try {
      await pipeline(
        Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>),
        createWriteStream(tmp),
      );
      await rename(tmp, dest);
    } finally {
      await rm(tmp, { force: true });
    }
    return true;
  };

  await fetchFile('config.json', true);
  await fetchFile('tokenizer.json', true);
  for (const f of OPTIONAL) await fetchFile(f, false);
  if (await fetchFile('model.safetensors.index.json', false)) {
    const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8')) as {
      weight_map?: Record<string, string>;
    };
    const shards = [...new Set(Object.values(index.weight_map ?? {}))];
    if (shards.length === 0) throw new Error(`${id}: model.safetensors.index.json names no shards`);
    // Shard names come from the remote index: plain file names only, never a path out of the cache.
    const bad = shards.find((f) => typeof f !== 'string' || !/^[\w.-]+\.safetensors$/.test(f) || f.startsWith('.'));
    if (bad !== undefined)
      throw new Error(
        `${id}: model.safetensors.index.json names a shard ${JSON.stringify(bad)} that is not a plain .safetensors file name`,
      );
    for (const s of shards) await fetchFile(s, true);
  } else if (!(await fetchFile('model.safetensors', false))) {
    throw new Error(
      `${id} has no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)`,
    );
  }
  return dir;
}
