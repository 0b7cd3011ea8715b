// Where adapters come from. Today: a local directory whose subdirectories holding an
// adapter_config.json are adapters named after the directory (the NIM / vLLM filesystem-resolver
// layout). Later tiers (S3 -> local disk cache -> host memory) implement the same interface: lookup()
// may download, and returns a local PEFT directory the engine can load.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';

export interface AdapterDescriptor {
  name: string;
  /** Local PEFT directory (adapter_config.json + weights). */
  path: string;
  /** chat_template from the adapter's own tokenizer_config.json, when it ships one. */
  chatTemplate?: string;
}

export interface AdapterSource {
  /** Every adapter this source knows now. */
  list(): Promise<AdapterDescriptor[]>;
  /** One adapter by name, or undefined when the source has no such adapter. */
  lookup(name: string): Promise<AdapterDescriptor | undefined>;
}

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

async function readChatTemplate(dir: string): Promise<string | undefined> {
  let cfg: unknown;
  try {
    cfg = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8'));
  } catch {
    return undefined;
  }
  let t = (cfg as { chat_template?: unknown } | null)?.chat_template;
  if (Array.isArray(t)) t = (t as Array<{ name?: unknown; template?: unknown }>).find((x) => x?.name === 'default')?.template;
  return typeof t === 'string' ? t : undefined;
}

export class LocalDirSource implements AdapterSource {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
  }

  async list(): Promise<AdapterDescriptor[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir, { withFileTypes: true })).filter((d) => d.isDirectory() || d.isSymbolicLink()).map((d) => d.name);
    } catch {
      return [];
    }
    const found = await Promise.all(names.sort().map((n) => this.lookup(n)));
    return found.filter((d): d is AdapterDescriptor => d !== undefined);
  }

  async lookup(name: string): Promise<AdapterDescriptor | undefined> {
    if (!isValidAdapterName(name)) return undefined;
    const path = join(this.dir, name);
    if (!(await isFile(join(path, 'adapter_config.json')))) return undefined;
    const chatTemplate = await readChatTemplate(path);
    return { name, path, ...(chatTemplate !== undefined ? { chatTemplate } : {}) };
  }
}

/** No adapter directory: only the base model is served. */
export class NoAdapters implements AdapterSource {
  list(): Promise<AdapterDescriptor[]> {
    return Promise.resolve([]);
  }

  lookup(): Promise<AdapterDescriptor | undefined> {
    return Promise.resolve(undefined);
  }
}
