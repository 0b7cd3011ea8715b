// validateAdapterFiles: does a directory of uploaded files make an adapter the deployment can
// serve? The engine's own rules decide (@loraplex/formats, the code the engine loads adapters with:
// PEFT config parsing, target-module resolution, tensor names, shapes and dtypes against the base
// model), applied to the safetensors header alone so a large adapter is never read into memory; a
// .bin (pickle) checkpoint is parsed by the same restricted reader. Also: sizes within limits, rank
// within the deployment's maximum, checksums.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  buildAdapter,
  EngineError,
  parseModelConfig,
  parsePeftConfig,
  parseTorchCheckpoint,
  readSafetensorsHeader,
  resolveAdapterModulesAsync,
  type ModelConfig,
} from '@loraplex/formats';
import { ALLOWED_FILES } from './entries.js';
import { AdapterValidationError, type AdapterValidationCode } from './errors.js';

export interface ValidationLimits {
  /** The base model's config.json (as workers report it). */
  modelConfig: Record<string, unknown>;
  /** Largest LoRA rank the deployment serves. */
  maxRank: number;
  /** All files together. */
  maxBytes: number;
}

export interface ValidatedAdapter {
  rank: number;
  alpha: number;
  targetModules: string[];
  files: Array<{ name: string; size: number; sha256: string }>;
  sizeBytes: number;
  /** sha256 over "<sha256>  <name>\n" lines sorted by name. */
  sha256: string;
}

const ENGINE_CODES: Partial<Record<string, AdapterValidationCode>> = {
  ADAPTER_CONFIG: 'invalid_config',
  INVALID_SAFETENSORS: 'invalid_weights',
  INVALID_CHECKPOINT: 'invalid_weights',
  ADAPTER_SHAPE: 'incompatible_adapter',
  ADAPTER_UNSUPPORTED: 'unsupported_adapter',
};

function fromEngine(e: unknown): unknown {
  if (!(e instanceof EngineError)) return e;
  const code = ENGINE_CODES[e.code];
  return code ? new AdapterValidationError(code, e.message) : e;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function baseModel(cfg: Record<string, unknown>): ModelConfig {
  try {
    return parseModelConfig(cfg);
  } catch (e) {
    throw new Error(`the base model's config.json cannot be used: ${(e as Error).message}`);
  }
}

export async function validateAdapterFiles(dir: string, limits: ValidationLimits): Promise<ValidatedAdapter> {
  const names = (await readdir(dir)).sort();
  const stray = names.find((n) => !(ALLOWED_FILES as readonly string[]).includes(n));
  if (stray)
    throw new AdapterValidationError(
      'unsafe_archive_entry',
      `${stray} is not an adapter file (allowed: ${ALLOWED_FILES.join(', ')})`,
    );
  if (!names.includes('adapter_config.json'))
    throw new AdapterValidationError('missing_file', 'the upload has no adapter_config.json');
  const weights = names.filter((n) => n === 'adapter_model.safetensors' || n === 'adapter_model.bin');
  if (weights.length === 0)
    throw new AdapterValidationError(
      'missing_file',
      'the upload has neither adapter_model.safetensors nor adapter_model.bin',
    );
  if (weights.length > 1)
    throw new AdapterValidationError(
      'invalid_weights',
      'the upload has both adapter_model.safetensors and adapter_model.bin; keep one',
    );
  const sizes = await Promise.all(names.map(async (n) => (await stat(join(dir, n))).size));
  const sizeBytes = sizes.reduce((a, b) => a + b, 0);
  if (sizeBytes > limits.maxBytes)
    throw new AdapterValidationError(
      'too_large',
      `the adapter's files total ${sizeBytes} bytes, above the limit of ${limits.maxBytes}`,
    );

  const model = baseModel(limits.modelConfig);
  let rank: number, alpha: number, targetModules: string[];
  try {
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
    } catch (e) {
      throw new AdapterValidationError(
        'invalid_config',
        `adapter_config.json is not valid JSON: ${(e as Error).message}`,
      );
    }
    const config = parsePeftConfig(raw);
    const tensors = new Map<string, { dtype: string; shape: number[]; data: Uint8Array }>();
    if (weights[0] === 'adapter_model.safetensors') {
      const header = await readSafetensorsHeader(join(dir, 'adapter_model.safetensors'), 'adapter_model.safetensors');
      // Header only: the engine's checks need names, dtypes and shapes, not the weights themselves.
      for (const [name, t] of header.tensors)
        tensors.set(name, { dtype: t.dtype, shape: t.shape, data: new Uint8Array(0) });
    } else {
      for (const [name, t] of parseTorchCheckpoint(await readFile(join(dir, 'adapter_model.bin')), 'adapter_model.bin'))
        tensors.set(name, t);
    }
    // The config's patterns are matched off the hot path: in slices, the event loop given back between them.
    const modules = await resolveAdapterModulesAsync(config, model, { maxRank: limits.maxRank });
    const built = buildAdapter(config, tensors, model, limits.maxRank, modules);
    rank = built.maxRank;
    alpha = config.loraAlpha;
    targetModules = [...new Set(built.modules.map((m) => m.module))].sort();
  } catch (e) {
    throw fromEngine(e);
  }
  const files = await Promise.all(
    names.map(async (name, i) => ({ name, size: sizes[i]!, sha256: await sha256File(join(dir, name)) })),
  );
  const sha256 = createHash('sha256')
    .update(files.map((f) => `${f.sha256}  ${f.name}\n`).join(''))
    .digest('hex');
  return { rank, alpha, targetModules, files, sizeBytes, sha256 };
}
