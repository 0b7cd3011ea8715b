// Adapter archives for the route tests, built on the byte-level writers in archive-writers.ts:
// entries optionally inside one wrapping folder, zip stored or deflated.
import { gzipSync } from 'node:zlib';
import { tar, zip } from './archive-writers.js';

export interface ArchiveEntry {
  name: string;
  data: Buffer;
}

const inDir = (name: string, dir?: string): string => (dir ? `${dir}/${name}` : name);

export function writeTar(entries: ArchiveEntry[], opts: { dir?: string } = {}): Buffer {
  return tar([
    ...(opts.dir ? [{ name: `${opts.dir}/`, type: '5' as const }] : []),
    ...entries.map((e) => ({ name: inDir(e.name, opts.dir), data: e.data })),
  ]);
}

export const writeTarGz = (entries: ArchiveEntry[], opts: { dir?: string } = {}): Buffer =>
  gzipSync(writeTar(entries, opts));

export function writeZip(entries: ArchiveEntry[], opts: { deflate?: boolean; dir?: string } = {}): Buffer {
  return zip(entries.map((e) => ({ name: inDir(e.name, opts.dir), data: e.data, deflate: opts.deflate ?? true })));
}
