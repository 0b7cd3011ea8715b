// What xgrammar needs to know about the tokenizer, read from the model's tokenizer.json: every
// token's raw (encoded) string by id, and how to turn it into bytes (the vocab type), as xgrammar's
// own Hugging Face detection does (python/xgrammar/tokenizer_info.py):
//   byte_level    — GPT-2 style byte-level BPE (decoder ByteLevel: Llama 3, Qwen 2, GPT-2);
//   byte_fallback — SentencePiece-style pieces with "▁" for spaces and <0xAB> byte tokens
//                   (decoder containing ByteFallback: Llama 2, Mistral);
//   raw           — tokens are their own text.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export type VocabType = 'byte_level' | 'byte_fallback' | 'raw';

export interface VocabInfo {
  /** Raw token strings by id ('' for ids the tokenizer does not define, e.g. padding). */
  encodedVocab: string[];
  vocabType: VocabType;
  /** The tokenizer prepends a space ("▁") to the text (SentencePiece add_dummy_prefix). */
  prependSpace: boolean;
}

interface Component { type?: string; decoders?: Component[]; normalizers?: Component[]; pretokenizers?: Component[]; prepend?: string; prepend_scheme?: string; add_prefix_space?: boolean }
interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number> | Array<[string, number]> };
  added_tokens?: Array<{ id: number; content: string }>;
  decoder?: Component | null;
  normalizer?: Component | null;
  pre_tokenizer?: Component | null;
}

/** A component and, for Sequence components, everything inside it. */
function flatten(c: Component | null | undefined): Component[] {
  if (!c) return [];
  return [c, ...[...(c.decoders ?? []), ...(c.normalizers ?? []), ...(c.pretokenizers ?? [])].flatMap(flatten)];
}

export function vocabInfoFromJson(tj: TokenizerJson, vocabSize: number): VocabInfo {
  const vocab = tj.model?.vocab;
  if (!vocab) throw new Error('tokenizer.json has no model.vocab');
  const entries: Array<[string, number]> = Array.isArray(vocab) ? vocab.map(([piece], id) => [piece, id]) : Object.entries(vocab);
  for (const t of tj.added_tokens ?? []) entries.push([t.content, t.id]);
  let size = vocabSize;
  for (const [, id] of entries) if (id >= size) size = id + 1;
  const encodedVocab = new Array<string>(size).fill('');
  for (const [piece, id] of entries) encodedVocab[id] = piece;
  const decoders = flatten(tj.decoder);
  let vocabType: VocabType = 'raw';
  if (decoders.some((d) => d.type === 'ByteLevel')) vocabType = 'byte_level';
  else if (decoders.some((d) => d.type === 'ByteFallback')) vocabType = 'byte_fallback';
  const prependSpace =
    flatten(tj.normalizer).some((n) => n.type === 'Prepend' && n.prepend === '▁') ||
    flatten(tj.pre_tokenizer).some((p) => p.type === 'Metaspace' && (p.prepend_scheme === 'always' || p.prepend_scheme === 'first' || p.add_prefix_space === true));
  return { encodedVocab, vocabType, prependSpace };
}

/** Reads `<modelDir>/tokenizer.json`; `vocabSize` is the model's logit width (config vocab_size). */
export async function readVocabInfo(modelDir: string, vocabSize: number): Promise<VocabInfo> {
  const tj = JSON.parse(await readFile(join(modelDir, 'tokenizer.json'), 'utf8')) as TokenizerJson;
  return vocabInfoFromJson(tj, vocabSize);
}
