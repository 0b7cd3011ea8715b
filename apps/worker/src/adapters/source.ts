// Where adapters come from (the first tier). A source lists adapters and describes one by name:
// - LocalDirSource: a directory whose subdirectories holding an adapter_config.json are adapters
//   named after the directory (the NIM / vLLM filesystem layout); the engine reads them in place.
// - S3Source (s3-source.ts): every prefix under s3://bucket/prefix/ holding an adapter_config.json;
//   its files are fetched into the disk cache (disk-cache.ts) before use.
// RescanningSource (rescanning-source.ts) wraps either and re-scans it at an interval, as NIM does.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';

/** One file of a remote adapter. `md5` (a plain S3 ETag) or `sha256`, when known, is verified after download. */
export interface RemoteFile {
  name: string;
  size: number;
  md5?: string;
  sha256?: string;
}

export interface RemoteAdapter {
  files: RemoteFile[];
  /** Streams one file to `dest`. */
  fetch(file: RemoteFile, dest: string): Promise<void>;
}

export interface AdapterLocation {
  name: string;
  /** Where it lives: a local directory, or an s3:// URL (reported as `root` in /v1/models). */
  path: string;
  /** Set when the files are not local: they go through the disk cache first. */
  remote?: RemoteAdapter;
  /** chat_template from the adapter's own tokenizer_config.json, when it ships one. */
  chatTemplate?: string;
}

export interface AdapterSource {
  /** Every adapter this source knows now. */
  list(): Promise<AdapterLocation[]>;
  /** One adapter by name, or undefined when the source has no such adapter. */
  lookup(name: string): Promise<AdapterLocation | undefined>;
}

/** Files of a PEFT adapter directory that the worker reads. */
export { ADAPTER_FILES } from '@loraplex/protocol';

/** Adapter names are single path components: letters, digits, '.', '_', '-' (no '..'). */
export function isValidAdapterName(name: string): boolean {
  return /^[A-Za-z0-9._-]{1,200}$/.test(name) && name !== '.' && name !== '..';
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** The chat template of a tokenizer_config.json's text (a string, or the 'default' of a list). */
export function chatTemplateOf(text: string): string | undefined {
  let cfg: unknown;
  try {
    cfg = JSON.parse(text);
  } catch {
    return undefined;
  }
  let t = (cfg as { chat_template?: unknown } | null)?.chat_template;
  if (Array.isArray(t))
    t = (t as Array<{ name?: unknown; template?: unknown }>).find((x) => x?.name === 'default')?.template;
  return typeof t === 'string' ? t : undefined;
}

async function readChatTemplate(dir: string): Promise<string | undefined> {
  try {
    return chatTemplateOf(await readFile(join(dir, 'tokenizer_config.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

export class LocalDirSource implements AdapterSource {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
  }

  async list(): Promise<AdapterLocation[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir, { withFileTypes: true }))
        .filter((d) => d.isDirectory() || d.isSymbolicLink())
        .map((d) => d.name);
    } catch {
      return [];
    }
    const found = await Promise.all(names.sort().map((n) => this.lookup(n)));
    return found.filter((d): d is AdapterLocation => d !== undefined);
  }

  async lookup(name: string): Promise<AdapterLocation | undefined> {
    if (!isValidAdapterName(name)) return undefined;
    const path = join(this.dir, name);
    if (!(await isFile(join(path, 'adapter_config.json')))) return undefined;
    const chatTemplate = await readChatTemplate(path);
    return { name, path, ...(chatTemplate !== undefined ? { chatTemplate } : {}) };
  }
}

/** No adapter directory: only the base model is served. */
export class NoAdapters implements AdapterSource {
  list(): Promise<AdapterLocation[]> {
    return Promise.resolve([]);
  }

  lookup(): Promise<AdapterLocation | undefined> {
    return Promise.resolve(undefined);
  }
}

/** A PEFT adapter directory at `path` served as `name`, or undefined when it holds no adapter_config.json. */
export async function localAdapterAt(name: string, path: string): Promise<AdapterLocation | undefined> {
  const dir = resolve(path);
  if (!(await isFile(join(dir, 'adapter_config.json')))) return undefined;
  const chatTemplate = await readChatTemplate(dir);
  return { name, path: dir, ...(chatTemplate !== undefined ? { chatTemplate } : {}) };
}

/**
 * Adapters named by the operator (vLLM's --lora-modules) or loaded at run time (/v1/load_lora_adapter)
 * in front of another source's listing: a named adapter wins over a listed one of the same name.
 */
export class NamedAdapters implements AdapterSource {
  private readonly named = new Map<string, AdapterLocation>();

  constructor(readonly inner: AdapterSource) {}

  has(name: string): boolean {
    return this.named.has(name);
  }

  add(location: AdapterLocation): void {
    this.named.set(location.name, location);
  }

  /** Forgets a named adapter; false when it was not one. */
  remove(name: string): boolean {
    return this.named.delete(name);
  }

  async list(): Promise<AdapterLocation[]> {
    const listed = (await this.inner.list()).filter((d) => !this.named.has(d.name));
    return [...this.named.values(), ...listed];
  }

  lookup(name: string): Promise<AdapterLocation | undefined> {
    const d = this.named.get(name);
    return d ? Promise.resolve(d) : this.inner.lookup(name);
  }
}

/** An entry of the adapter directory that looks like an adapter the worker cannot serve. */
export interface UnsupportedAdapter {
  name: string;
  path: string;
  reason: string;
}

const NEMO_REASON =
  'NeMo-format adapter (.nemo): loraplex serves Hugging Face PEFT adapters only ' +
  '(adapter_config.json + adapter_model.safetensors); convert it to PEFT format';

/**
 * NeMo adapters in `dir` (NIM's other layout): a `.nemo` file, or a directory holding one (or named
 * `*.nemo`) without an adapter_config.json. Listed with the reason, never skipped silently.
 */
export async function unsupportedAdapters(dir: string): Promise<UnsupportedAdapter[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: UnsupportedAdapter[] = [];
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const path = join(dir, e.name);
    if (e.isFile() && e.name.endsWith('.nemo')) {
      out.push({ name: e.name.slice(0, -'.nemo'.length), path, reason: NEMO_REASON });
    } else if (e.isDirectory() && !(await isFile(join(path, 'adapter_config.json')))) {
      const inner = await readdir(path).catch(() => [] as string[]);
      if (e.name.endsWith('.nemo') || inner.some((f) => f.endsWith('.nemo')))
        out.push({ name: e.name.replace(/\.nemo$/, ''), path, reason: NEMO_REASON });
    }
  }
  return out;
}
