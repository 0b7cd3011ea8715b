// The disk tier: remote adapters (S3) are downloaded once into `root`, one directory per adapter
// version (name + a hash of its files' names, sizes and checksums, so a re-uploaded adapter is a
// new entry), and reused until evicted, least recently used first, when the cache holds more than
// `maxBytes`. Downloads go to a temporary directory that is renamed into place only once every
// file's size and checksum matched, so a crash never leaves a half entry that looks complete.
// Each entry's manifest records the files' sha256, which the host tier checks again when it reads
// them (a file changed on disk is detected, dropped and fetched again).
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Lru } from '@loraplex/common';
import type { AdapterLocation } from './source.js';

export interface ManifestFile {
  name: string;
  size: number;
  sha256: string;
}

interface Entry {
  dir: string;
  bytes: number;
}

const MANIFEST = '.manifest.json';

async function hashFile(path: string): Promise<{ sha256: string; md5: string; size: number }> {
  const sha = createHash('sha256'),
    md5 = createHash('md5');
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    sha.update(chunk as Buffer);
    md5.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: sha.digest('hex'), md5: md5.digest('hex'), size };
}

export class DiskCache {
  /** By bytes; entries being read are skipped by eviction. */
  private readonly entries: Lru<string, Entry>;
  private readonly loads = new Map<string, Promise<string>>();
  /** Entries being read by the host tier right now: never evicted under a reader. */
  private readonly busy = new Map<string, number>();
  private ready: Promise<void> | undefined;
  private adopting = false;

  constructor(
    readonly root: string,
    readonly maxBytes: number,
  ) {
    this.entries = new Lru({
      maxWeight: maxBytes,
      weigh: (e) => e.bytes,
      canEvict: (_, e) => !this.adopting && !this.busy.has(e.dir),
    });
  }

  get bytes(): number {
    return this.entries.weight;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Adopts complete entries left by an earlier run and removes unfinished downloads. */
  private init(): Promise<void> {
    this.ready ??= (async () => {
      // Adopting evicts nothing, so starting up deletes no complete entry: an excess over maxBytes
      // left by an earlier run (with a larger limit) goes at the next download.
      this.adopting = true;
      await mkdir(this.root, { recursive: true });
      for (const d of await readdir(this.root, { withFileTypes: true })) {
        const dir = join(this.root, d.name);
        if (!d.isDirectory() || d.name.includes('.tmp-')) {
          await rm(dir, { recursive: true, force: true });
          continue;
        }
        try {
          const files = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as ManifestFile[];
          this.entries.set(d.name, { dir, bytes: files.reduce((s, f) => s + f.size, 0) });
        } catch {
          await rm(dir, { recursive: true, force: true });
        }
      }
    })().finally(() => (this.adopting = false));
    return this.ready;
  }

  private static key(d: AdapterLocation): string {
    const h = createHash('sha256');
    for (const f of [...d.remote!.files].sort((a, b) => a.name.localeCompare(b.name)))
      h.update(`${f.name}\0${f.size}\0${f.md5 ?? ''}\0${f.sha256 ?? ''}\n`);
    return `${d.name}--${h.digest('hex').slice(0, 16)}`;
  }

  /** A local directory holding the adapter: downloaded and verified first when it is remote. */
  async ensure(d: AdapterLocation): Promise<string> {
    if (!d.remote) return d.path;
    await this.init();
    const key = DiskCache.key(d);
    const hit = this.entries.get(key);
    if (hit) return hit.dir;
    let load = this.loads.get(key);
    if (!load) {
      load = this.download(key, d).finally(() => this.loads.delete(key));
      this.loads.set(key, load);
    }
    return load;
  }

  /** The sha256 of each file, as verified at download. */
  async manifest(dir: string): Promise<ManifestFile[]> {
    return JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as ManifestFile[];
  }

  /** Keeps `dir` from eviction until the returned function is called. */
  hold(dir: string): () => void {
    this.busy.set(dir, (this.busy.get(dir) ?? 0) + 1);
    return () => {
      const n = (this.busy.get(dir) ?? 1) - 1;
      if (n <= 0) this.busy.delete(dir);
      else this.busy.set(dir, n);
    };
  }

  /** Drops an entry whose files no longer match their manifest. */
  async discard(dir: string): Promise<void> {
    for (const [k, e] of this.entries.entries()) if (e.dir === dir) this.entries.delete(k);
    await rm(dir, { recursive: true, force: true });
  }

  private async download(key: string, d: AdapterLocation): Promise<string> {
    const dir = join(this.root, key);
    const tmp = join(this.root, `${key}.tmp-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp, { recursive: true });
    try {
      const manifest: ManifestFile[] = [];
      for (const f of d.remote!.files) {
        const path = join(tmp, f.name);
        await d.remote!.fetch(f, path);
        const got = await hashFile(path);
        if (got.size !== f.size)
          throw new Error(`${d.path}/${f.name}: downloaded ${got.size} bytes, the source lists ${f.size}`);
        if (f.md5 && got.md5 !== f.md5)
          throw new Error(`${d.path}/${f.name}: checksum mismatch (md5 ${got.md5}, the source lists ${f.md5})`);
        if (f.sha256 && got.sha256 !== f.sha256)
          throw new Error(`${d.path}/${f.name}: checksum mismatch (sha256 ${got.sha256}, expected ${f.sha256})`);
        manifest.push({ name: f.name, size: got.size, sha256: got.sha256 });
      }
      await writeFile(join(tmp, MANIFEST), JSON.stringify(manifest));
      await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir);
      // Least recently used entries go until the cache fits (never this one or one being read).
      for (const gone of this.entries.set(key, { dir, bytes: manifest.reduce((s, f) => s + f.size, 0) }))
        await rm(gone.value.dir, { recursive: true, force: true });
      return dir;
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** For tests and metrics: is a directory present on disk. */
  static async exists(dir: string): Promise<boolean> {
    return stat(dir).then(
      () => true,
      () => false,
    );
  }
}
