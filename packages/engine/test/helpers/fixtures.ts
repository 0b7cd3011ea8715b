// Access to the hf-tiny and hf-tiny-v2 reference fixtures (real transformers + PEFT outputs) shipped in the repo.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSafetensorsHeader } from '@loraplex/formats';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'hf-tiny');
export const FIXTURES_V2 = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'hf-tiny-v2');
/** Models with the three standard LoRA adapters and the full reference set (same format in both folders). */
export const MODELS = ['llama', 'qwen2', 'qwen3'] as const;
export const ADAPTERS = ['lora_all_r8', 'lora_qv_r4', 'lora_qkvo_r16_rslora'] as const;
/** hf-tiny-v2/llama_dora: two DoRA adapters (peft use_dora) and a plain one, same reference format. */
export const DORA_ADAPTERS = ['dora_all_r8', 'dora_qv_r4', 'lora_plain_r8'] as const;
export type FixtureModel = (typeof MODELS)[number] | 'llama_dora';
/** Every fixture model with the adapters its references cover. */
export const FIXTURE_SETS: Array<{ model: FixtureModel; adapters: readonly string[] }> = [
  ...MODELS.map((model) => ({ model, adapters: ADAPTERS })),
  { model: 'llama_dora', adapters: DORA_ADAPTERS },
];

/** The folder holding model m: qwen3 (per-head q/k norms, head_dim != hidden / heads) and llama_dora are in hf-tiny-v2. */
export const fixtureDir = (m: FixtureModel): string =>
  join(m === 'qwen3' || m === 'llama_dora' ? FIXTURES_V2 : FIXTURES, m);
export const modelDir = (m: FixtureModel): string => join(fixtureDir(m), 'base');
export const adapterDir = (m: FixtureModel, a: string): string => join(fixtureDir(m), 'adapters', a);

export interface VariantPrompt {
  prompt_index: number;
  greedy_tokens: number[];
  greedy_top1_top2_margins: number[];
}
export interface HeteroRow {
  row: number;
  prompt_index: number;
  adapter: string;
  greedy_tokens: number[];
}
export interface Reference {
  prompts: number[][];
  n_new_tokens: number;
  variants: Record<string, VariantPrompt[]>;
  merged: Record<string, Array<{ prompt_index: number; greedy_tokens: number[] }>>;
  hetero_batch: { rows: HeteroRow[] };
}

export function reference(m: FixtureModel): Reference {
  return JSON.parse(readFileSync(join(fixtureDir(m), 'reference.json'), 'utf8')) as Reference;
}

/** Reads every tensor of reference_logits.safetensors as float32 with its shape. */
export function referenceLogits(m: FixtureModel): Map<string, { shape: number[]; data: Float32Array }> {
  const buf = readFileSync(join(fixtureDir(m), 'reference_logits.safetensors'));
  const len = Number(buf.readBigUInt64LE(0));
  const header = parseSafetensorsHeader('reference_logits', buf.subarray(8, 8 + len), buf.length);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of header.tensors) {
    if (t.dtype !== 'F32') continue;
    const bytes = buf.subarray(t.offset, t.offset + t.byteLength);
    out.set(name, { shape: t.shape, data: new Float32Array(new Uint8Array(bytes).buffer) });
  }
  return out;
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
