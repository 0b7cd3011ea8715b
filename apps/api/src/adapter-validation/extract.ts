// extractArchive: an uploaded archive (zip, tar or tar.gz) as a stream -> adapter files in destDir.
// Nothing is held whole in memory: tar streams entry by entry; zip is spooled to a temporary file
// first (its directory is at the end), with the upload's size limit enforced while it arrives.
// On any failure destDir is left empty.
import { createWriteStream } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { EntryBook, type ArchiveLimits } from './entries.js';
import { AdapterValidationError } from './errors.js';
import { extractTar } from './tar.js';
import { extractZipFile } from './zip.js';

export type ArchiveFormat = 'zip' | 'tar' | 'tar.gz';

/** Passes bytes through, failing once more than `max` went by (the upload size limit). */
export function byteLimit(max: number, what: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      seen += chunk.length;
      if (seen > max) cb(new AdapterValidationError('too_large', `${what} is larger than ${max} bytes`));
      else cb(null, chunk);
    },
  });
}

async function emptyDir(dir: string): Promise<void> {
  for (const f of await readdir(dir).catch(() => [] as string[]))
    await rm(join(dir, f), { recursive: true, force: true });
}

export async function extractArchive(
  input: Readable,
  format: ArchiveFormat,
  destDir: string,
  limits: ArchiveLimits,
): Promise<string[]> {
  const book = new EntryBook(limits);
  try {
    if (format === 'zip') {
      const spool = await mkdtemp(join(tmpdir(), 'lp-upload-'));
      try {
        const zipPath = join(spool, 'upload.zip');
        await pipeline(input, byteLimit(limits.maxArchiveBytes, 'the upload'), createWriteStream(zipPath));
        return await extractZipFile(zipPath, destDir, book, limits.maxFiles);
      } finally {
        await rm(spool, { recursive: true, force: true });
      }
    }
    const limited = input.pipe(byteLimit(limits.maxArchiveBytes, 'the upload'));
    input.on('error', (e) => limited.destroy(e));
    let source: Readable = limited;
    if (format === 'tar.gz') {
      const gunzip = zlib.createGunzip();
      limited.on('error', (e) => gunzip.destroy(e));
      source = limited.pipe(gunzip);
    }
    try {
      return await extractTar(source, destDir, book);
    } catch (e) {
      if (e instanceof AdapterValidationError) throw e;
      throw new AdapterValidationError(
        'malformed_archive',
        `the upload could not be read as ${format}: ${(e as Error).message}`,
      );
    } finally {
      source.destroy();
    }
  } catch (e) {
    await emptyDir(destDir);
    throw e;
  }
}
