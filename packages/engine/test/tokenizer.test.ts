// Text in and out: tokenizer.json through `tokenizers`, the ChatML template through @huggingface/jinja.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/index.js';
import { modelDir } from './helpers/fixtures.js';

let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(modelDir('qwen2'), { backend: 'cpu', threads: 1 });
});
afterAll(async () => engine?.close());

describe('tokenizer and chat template', () => {
  it('special tokens are single ids and decode(encode(s)) round-trips any string', async () => {
    const tk = engine.tokenizer!;
    expect(await tk.encode('<|im_start|>')).toEqual([3]);
    for (const s of ['hello world', 'Grüße, 世界! 🎉\n\ttabs', '  leading spaces', '']) {
      expect(await tk.decode(await tk.encode(s), false)).toBe(s);
    }
    expect(tk.tokenId('<|im_end|>')).toBe(4);
  });

  it('renders the ChatML template with the default system message and the generation prompt', () => {
    const text = engine.tokenizer!.applyChatTemplate([{ role: 'user', content: 'Hi there' }]);
    expect(text).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('text prompts are tokenized, outputs detokenized, and equal the token-id path', async () => {
    const prompt = 'The license grants';
    const ids = await engine.tokenizer!.encode(prompt);
    const [a, b] = await engine.generate([
      { prompt, sampling: { temperature: 0, maxTokens: 6, ignoreEos: true } },
      { prompt: ids, sampling: { temperature: 0, maxTokens: 6, ignoreEos: true } },
    ]);
    expect(a!.promptTokens).toEqual(ids);
    expect(a!.tokens).toEqual(b!.tokens);
    expect(a!.text).toBe(await engine.tokenizer!.decode(a!.tokens));
  });
});
