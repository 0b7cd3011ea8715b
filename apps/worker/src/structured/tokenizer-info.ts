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
  /**
   * Raw token strings by id: '' for ids the tokenizer does not define (padding) and for special
   * tokens (xgrammar never allows a token that decodes to nothing, except the stop tokens it is given).
   */
  encodedVocab: string[];
  /** The bytes each token adds to the output (empty for special tokens). */
  tokenBytes: Uint8Array[];
  vocabType: VocabType;
  /** The tokenizer prepends a space ("▁") to the text (SentencePiece add_dummy_prefix). */
  prependSpace: boolean;
}

interface Component {
  type?: string;
  decoders?: Component[];
  normalizers?: Component[];
  pretokenizers?: Component[];
  prepend?: string;
  prepend_scheme?: string;
  add_prefix_space?: boolean;
}
interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number> | Array<[string, number]> };
  added_tokens?: Array<{ id: number; content: string; special?: boolean }>;
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
  const entries: Array<[string, number]> = Array.isArray(vocab)
    ? vocab.map(([piece], id) => [piece, id])
    : Object.entries(vocab);
  const added = new Map<number, boolean>();
  for (const t of tj.added_tokens ?? []) {
    entries.push([t.special ? '' : t.content, t.id]);
    added.set(t.id, t.special === true);
  }
  let size = vocabSize;
  for (const [, id] of entries) if (id >= size) size = id + 1;
  const encodedVocab = new Array<string>(size).fill('');
  for (const [piece, id] of entries) encodedVocab[id] = piece;
  const decoders = flatten(tj.decoder);
  let vocabType: VocabType = 'raw';
  if (decoders.some((d) => d.type === 'ByteLevel')) vocabType = 'byte_level';
  else if (decoders.some((d) => d.type === 'ByteFallback')) vocabType = 'byte_fallback';
  // A SentencePiece vocabulary decoded by Metaspace alone (no byte fallback): "▁" is a space and
  // every other piece its own text — raw tokens once "▁" is replaced.
  if (vocabType === 'raw' && decoders.some((d) => d.type === 'Metaspace')) {
    for (let id = 0; id < encodedVocab.length; id++)
      if (!added.has(id)) encodedVocab[id] = encodedVocab[id]!.replaceAll('▁', ' ');
  }
  const prependSpace =
    flatten(tj.normalizer).some((n) => n.type === 'Prepend' && n.prepend === '▁') ||
    flatten(tj.pre_tokenizer).some(
      (p) =>
        p.type === 'Metaspace' &&
        (p.prepend_scheme === 'always' || p.prepend_scheme === 'first' || p.add_prefix_space === true),
    );
  // Added tokens are stored as their text, not in the vocab's byte encoding.
  const tokenBytes = encodedVocab.map((piece, id) => (added.has(id) ? utf8(piece) : pieceBytes(piece, vocabType)));
  return { encodedVocab, tokenBytes, vocabType, prependSpace };
}

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest map to U+0100.. in order. */
let byteLevelDecoder: Map<number, number> | undefined;
function byteLevel(): Map<number, number> {
  if (byteLevelDecoder) return byteLevelDecoder;
  const m = new Map<number, number>();
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    m.set(printable ? b : next++, b);
  }
  return (byteLevelDecoder = m);
}

function pieceBytes(piece: string, type: VocabType): Uint8Array {
  if (type === 'byte_level') {
    const dec = byteLevel();
    const out: number[] = [];
    for (const ch of piece) {
      const b = dec.get(ch.codePointAt(0)!);
      if (b === undefined) out.push(...utf8(ch));
      else out.push(b);
    }
    return Uint8Array.from(out);
  }
  if (type === 'byte_fallback') {
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (m) return Uint8Array.of(parseInt(m[1]!, 16));
    return utf8(piece.replaceAll('▁', ' '));
  }
  return utf8(piece);
}

/** Reads `<modelDir>/tokenizer.json`; `vocabSize` is the model's logit width (config vocab_size). */
export async function readVocabInfo(modelDir: string, vocabSize: number): Promise<VocabInfo> {
  const tj = JSON.parse(await readFile(join(modelDir, 'tokenizer.json'), 'utf8')) as TokenizerJson;
  return vocabInfoFromJson(tj, vocabSize);
}
