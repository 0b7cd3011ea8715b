// The built-in demo model: deterministic files, loadable by the engine with its adapters, and a real
// Llama 3 tokenizer that round-trips text.
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEMO_ADAPTERS, Engine, ensureDemoModel } from '../src/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'lp-demo-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function digest(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

describe('ensureDemoModel', () => {
  it('generates byte-identical files every time, and reuses them', async () => {
    const a = await ensureDemoModel(join(tmp, 'a'));
    const b = await ensureDemoModel(join(tmp, 'b'));
    expect(digest(join(tmp, 'a'))).toEqual(digest(join(tmp, 'b')));
    const mtime = statSync(join(a.modelDir, 'model.safetensors')).mtimeMs;
    await ensureDemoModel(join(tmp, 'a'));
    expect(statSync(join(a.modelDir, 'model.safetensors')).mtimeMs).toBe(mtime);
    expect(readdirSync(b.adapterDir).sort()).toEqual(Object.keys(DEMO_ADAPTERS).sort());
    expect(readdirSync(tmp).filter((e) => e.includes('.tmp-'))).toEqual([]);
  });

  it('loads in the engine, generates with and without its adapters, and its tokenizer round-trips text', async () => {
    const { modelDir, adapterDir } = await ensureDemoModel(join(tmp, 'a'));
    const engine = await Engine.load(modelDir, { backend: 'cpu', threads: 1 });
    try {
      const text = 'Hello, world! Ünïcødé and emoji 🎉';
      expect(await engine.tokenizer!.decode(await engine.tokenizer!.encode(text, false), true)).toBe(text);
      for (const name of Object.keys(DEMO_ADAPTERS)) await engine.loadAdapter(name, join(adapterDir, name));
      const outs = await engine.generate(
        [undefined, ...Object.keys(DEMO_ADAPTERS)].map((adapter) => ({
          prompt: 'Once upon a time',
          ...(adapter ? { adapter } : {}),
          sampling: { maxTokens: 6, temperature: 0, ignoreEos: true },
        })),
      );
      for (const o of outs) expect(o.tokens).toHaveLength(6);
      expect(new Set(outs.map((o) => o.tokens.join(','))).size).toBe(3); // each adapter changes the output
      const prompt = await engine.tokenizer!.applyChatTemplate([{ role: 'user', content: 'Hi' }]);
      expect(prompt).toContain('<|start_header_id|>user<|end_header_id|>');
    } finally {
      await engine.close();
    }
  });
});
