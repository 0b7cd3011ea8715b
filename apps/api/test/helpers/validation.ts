// The tests' stand-in for src/adapter-validation (written by another helper, merged later): an
// honest, smaller validator. It reads adapter_config.json with the engine's parsePeftConfig and the
// safetensors header with readSafetensorsHeader, checks the rank limit and sizes, and hashes the
// files as the contract says. Archive extraction spools to disk, then unpacks with the test readers.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parsePeftConfig, readSafetensorsHeader } from '@loraplex/engine';
import type { AdapterValidation, ArchiveFormat, ArchiveLimits, ValidateOptions, ValidatedAdapter } from '../../src/ports.js';
import { readTar, readTarGz, readZip } from './archive.js';

export class AdapterValidationError extends Error {
  constructor(readonly code: string, message: string, readonly status: number) {
    super(message);
    this.name = 'AdapterValidationError';
  }
}

const invalid = (message: string): AdapterValidationError => new AdapterValidationError('adapter_invalid', message, 422);

async function extractArchive(input: Readable, format: ArchiveFormat, destDir: string, limits: ArchiveLimits): Promise<string[]> {
  const spool = join(destDir, '.archive');
  await pipeline(input, createWriteStream(spool));
  const buf = await readFile(spool);
  await rm(spool);
  let entries;
  try {
    entries = format === 'zip' ? readZip(buf) : format === 'tar' ? readTar(buf) : readTarGz(buf);
  } catch (e) {
    throw new AdapterValidationError('invalid_archive', `cannot read the ${format} archive: ${(e as Error).message}`, 400);
  }
  if (entries.length > limits.maxFiles) throw new AdapterValidationError('too_many_files', `the archive holds more than ${limits.maxFiles} files`, 400);
  const total = entries.reduce((n, e) => n + e.data.length, 0);
  if (total > limits.maxUncompressedBytes) throw new AdapterValidationError('payload_too_large', `the archive unpacks to more than ${limits.maxUncompressedBytes} bytes`, 413);
  const tops = new Set(entries.map((e) => e.name.split('/')[0]));
  const strip = tops.size === 1 && entries.every((e) => e.name.includes('/'));
  const names: string[] = [];
  for (const e of entries) {
    const name = strip ? e.name.split('/').slice(1).join('/') : e.name;
    if (name.split('/').includes('..') || name.startsWith('/')) throw new AdapterValidationError('unsafe_path', `unsafe path ${name}`, 400);
    await mkdir(dirname(join(destDir, name)), { recursive: true });
    await writeFile(join(destDir, name), e.data);
    names.push(name);
  }
  return names;
}

async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

async function validateAdapterFiles(dir: string, opts: ValidateOptions): Promise<ValidatedAdapter> {
  const present = new Set(await readdir(dir));
  if (!present.has('adapter_config.json')) throw invalid('adapter_config.json is missing');
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
  } catch {
    throw invalid('adapter_config.json is not valid JSON');
  }
  let cfg;
  try {
    cfg = parsePeftConfig(raw);
  } catch (e) {
    throw invalid((e as Error).message);
  }
  if (cfg.r > opts.maxRank) throw invalid(`rank ${cfg.r} is above the base model's max_lora_rank ${opts.maxRank}`);
  const weights = present.has('adapter_model.safetensors') ? 'adapter_model.safetensors' : present.has('adapter_model.bin') ? 'adapter_model.bin' : undefined;
  if (!weights) throw invalid('adapter_model.safetensors or adapter_model.bin is missing');
  if (weights === 'adapter_model.safetensors') {
    try {
      const h = await readSafetensorsHeader(join(dir, weights));
      if (![...h.tensors.keys()].some((k) => k.includes('lora_A'))) throw new Error('no lora_A tensors');
    } catch (e) {
      throw invalid(`adapter_model.safetensors: ${(e as Error).message}`);
    }
  }
  const keep = ['adapter_config.json', weights, ...(present.has('tokenizer_config.json') ? ['tokenizer_config.json'] : [])].sort();
  const files = [];
  for (const name of keep) files.push({ name, size: (await stat(join(dir, name))).size, sha256: await sha256File(join(dir, name)) });
  const sizeBytes = files.reduce((n, f) => n + f.size, 0);
  if (sizeBytes > opts.maxBytes) throw new AdapterValidationError('payload_too_large', `the adapter is ${sizeBytes} bytes, over ${opts.maxBytes}`, 413);
  const tm = cfg.targetModules;
  return {
    rank: cfg.r,
    alpha: cfg.loraAlpha,
    targetModules: Array.isArray(tm) ? tm : tm === null ? [] : [tm],
    files,
    sizeBytes,
    sha256: createHash('sha256').update(files.map((f) => `${f.sha256}  ${f.name}\n`).join('')).digest('hex'),
  };
}

export const testValidation: AdapterValidation = { extractArchive, validateAdapterFiles };
