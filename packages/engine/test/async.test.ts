// The addon never blocks the event loop, and adapters load and unload while other sequences run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/index.js';
import { adapterDir, modelDir } from './helpers/fixtures.js';
import { writeModel } from './helpers/gen-model.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-async-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('asynchronous native calls', () => {
  it('the event loop keeps turning while steps run on worker threads', async () => {
    const dir = join(tmp, 'medium');
    writeModel(dir, { vocab: 4000, hidden: 256, intermediate: 688, layers: 6, heads: 8, kvHeads: 4, seed: 1 });
    const e = await Engine.load(dir, { backend: 'cpu', threads: 2, maxBatchTokens: 64 });
    try {
      let ticks = 0,
        maxGap = 0,
        last = performance.now(),
        done = false;
      const spin = (): void => {
        const now = performance.now();
        maxGap = Math.max(maxGap, now - last);
        last = now;
        ticks++;
        if (!done) setImmediate(spin);
      };
      setImmediate(spin);
      const t0 = performance.now();
      await e.generate(
        Array.from({ length: 4 }, (_, i) => ({
          prompt: Array.from({ length: 300 }, (_, k) => (k * 7 + i) % 4000),
          sampling: { maxTokens: 8, temperature: 0 },
        })),
      );
      const elapsed = performance.now() - t0;
      done = true;
      expect(elapsed).toBeGreaterThan(50); // the work is long enough to notice a blocked loop
      expect(ticks).toBeGreaterThan(20);
      // Under a loaded CI machine a tick can be late; a blocked loop would show one gap as long as the whole call.
      expect(maxGap).toBeLessThan(Math.max(100, elapsed / 4));
    } finally {
      await e.close();
    }
  });

  it('adapters load into free slots and unload while another adapter decodes; in-use adapters refuse eviction', async () => {
    const e = await Engine.load(modelDir('llama'), {
      backend: 'cpu',
      maxAdapters: 3,
      maxLoraRank: 16,
      threads: 2,
      maxBatchTokens: 4,
    });
    try {
      await e.loadAdapter('busy', adapterDir('llama', 'lora_all_r8'));
      await e.loadAdapter('idle', adapterDir('llama', 'lora_qv_r4'));
      const req = {
        prompt: [437, 489, 451, 484, 463, 291, 300, 170, 350, 276, 410],
        adapter: 'busy',
        sampling: { temperature: 0, maxTokens: 12, ignoreEos: true },
      };
      const running = e.generate([req]);
      const [loaded] = await Promise.all([
        e.loadAdapter('new', adapterDir('llama', 'lora_qkvo_r16_rslora')),
        e.unloadAdapter('idle'),
      ]);
      expect(loaded.slot).toBeGreaterThanOrEqual(0);
      await expect(e.unloadAdapter('busy')).rejects.toMatchObject({ code: 'ADAPTER_IN_USE' });
      const [out] = await running;
      expect(out!.tokens).toEqual([168, 454, 90, 218, 168, 439, 168, 439, 168, 454, 90, 215]); // reference greedy tokens
      await e.unloadAdapter('busy');
      expect(e.listAdapters().map((a) => a.name)).toEqual(['new']);
    } finally {
      await e.close();
    }
  });
});
