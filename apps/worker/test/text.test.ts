// Incremental detokenisation (never splits a UTF-8 character, concatenates to the full decode) and
// stop strings (held back while they might still match).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TextTokenizer } from '@loraplex/engine';
import { describe, expect, it } from 'vitest';
import { IncrementalDetokenizer } from '../src/scheduler/detokenizer.js';
import { StopMatcher } from '../src/scheduler/stop-strings.js';

const FIXTURES = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  'packages',
  'engine',
  'test',
  'fixtures',
  'hf-tiny',
);

function feed(m: StopMatcher, deltas: string[]): { shown: string[]; stop?: string; tail: string } {
  const shown: string[] = [];
  let stop: string | undefined;
  for (const d of deltas) {
    const r = m.push(d);
    shown.push(r.text);
    if (r.stop !== undefined) {
      stop = r.stop;
      break;
    }
  }
  return { shown, ...(stop !== undefined ? { stop } : {}), tail: m.flush() };
}

describe('StopMatcher', () => {
  it('holds back a possible stop-string start and cuts the stop string (OpenAI)', () => {
    const r = feed(new StopMatcher(['END']), ['hello E', 'N', 'D more']);
    expect(r.shown).toEqual(['hello ', '', '']);
    expect(r.stop).toBe('END');
    expect(r.shown.join('')).toBe('hello ');
  });

  it('releases held text once it can no longer match', () => {
    const r = feed(new StopMatcher(['END']), ['a E', 'Nx', 'y']);
    expect(r.shown).toEqual(['a ', 'ENx', 'y']);
    expect(r.stop).toBeUndefined();
  });

  it('keeps the stop string when asked (LoRAX) and picks the earliest of several', () => {
    const r = feed(new StopMatcher(['b', 'abc'], true), ['xxab', 'c']);
    expect(r.stop).toBe('b');
    expect(r.shown.join('')).toBe('xxab');
  });

  it('matches a stop string inside one delta and flushes held text at the end', () => {
    expect(feed(new StopMatcher(['\n\n']), ['one\n\ntwo']).shown).toEqual(['one']);
    const r = feed(new StopMatcher(['###']), ['x#', '#']);
    expect(r.shown.join('') + r.tail).toBe('x##');
  });

  it('passes text straight through without stop strings', () => {
    expect(feed(new StopMatcher([]), ['a', 'b']).shown).toEqual(['a', 'b']);
  });
});

describe('IncrementalDetokenizer on the fixture tokenizers', () => {
  for (const model of ['llama', 'qwen2']) {
    it(`${model}: multi-byte characters are never split and the deltas add up to the full decode`, async () => {
      const tk = (await TextTokenizer.fromDir(join(FIXTURES, model, 'base')))!;
      const text = 'naïve café — 世界 🎉 ok';
      const ids = await tk.encode(text, false);
      const d = new IncrementalDetokenizer(tk);
      const deltas: string[] = [];
      for (const id of ids) deltas.push(await d.push(id));
      deltas.push(await d.flush());
      for (const x of deltas) expect(x).not.toContain('\uFFFD');
      expect(deltas.join('')).toBe(await tk.decode(ids));
    });

    it(`${model}: random token streams concatenate to decode(all)`, async () => {
      const tk = (await TextTokenizer.fromDir(join(FIXTURES, model, 'base')))!;
      let seed = 7;
      const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
      for (let trial = 0; trial < 20; trial++) {
        const ids = Array.from({ length: 24 }, () => 5 + Math.floor(rnd() * 500));
        const d = new IncrementalDetokenizer(tk);
        let out = '';
        for (const id of ids) out += await d.push(id);
        out += await d.flush();
        expect(out).toBe(await tk.decode(ids));
      }
    });
  }
});
