// An adapter is a native AdapterHandle: it owns its slot and LoRA pool pages until release(), and the
// native allocator's pin count (not a count kept in JS) is what refuses to release an adapter in use.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/index.js';
import type { NativeAdapterHandle } from '../src/native.js';
import { adapterDir, modelDir } from './helpers/fixtures.js';

// The handle behind a loaded adapter (the Engine keeps name -> handle only).
function handleOf(engine: Engine, name: string): NativeAdapterHandle {
  const adapters = Reflect.get(engine, 'adapters') as Map<string, { handle: NativeAdapterHandle }>;
  const entry = adapters.get(name);
  if (!entry) throw new Error(`${name} is not loaded`);
  return entry.handle;
}

describe('native adapter handles', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(modelDir('llama'), { backend: 'cpu', maxAdapters: 2, maxLoraRank: 8, threads: 1 });
  });
  afterAll(async () => engine?.close());

  it('a handle owns its slot and pages; a pin refuses release; release frees both once', async () => {
    const before = engine.info();
    expect(before.freeSlots).toBe(2);
    expect(before.freeLoraPages).toBe(16);
    const info = await engine.loadAdapter('qv', adapterDir('llama', 'lora_qv_r4'));
    const h = handleOf(engine, 'qv');
    expect(h.slot).toBe(info.slot);
    expect(h.pages).toBe(4); // rank 4: four rank-row pages
    expect(h.bytes).toBeGreaterThan(0);
    expect(h.bytes % h.pages).toBe(0);
    expect(h.pins).toBe(0);
    expect(engine.info()).toMatchObject({ freeSlots: 1, freeLoraPages: 12 });

    h.pin();
    expect(h.pins).toBe(1);
    await expect(engine.unloadAdapter('qv')).rejects.toMatchObject({ code: 'ADAPTER_IN_USE' });
    expect(engine.listAdapters().map((a) => a.name)).toEqual(['qv']);
    h.unpin();
    expect(h.pins).toBe(0);

    await engine.unloadAdapter('qv');
    expect(h.slot).toBe(-1);
    expect(h.release()).toBe(false); // already released
    expect(() => h.pin()).toThrow(/ADAPTER_NOT_FOUND/);
    expect(engine.info()).toMatchObject({ freeSlots: 2, freeLoraPages: 16 });
  });

  it('generate() pins its adapter natively for its whole duration and unpins it after', async () => {
    await engine.loadAdapter('all', adapterDir('llama', 'lora_all_r8'));
    const h = handleOf(engine, 'all');
    const running = engine.generate([
      { prompt: [437, 489, 451], adapter: 'all', sampling: { temperature: 0, maxTokens: 4, ignoreEos: true } },
    ]);
    expect(h.pins).toBe(1); // taken synchronously, before generate() awaits anything
    await expect(engine.unloadAdapter('all')).rejects.toMatchObject({ code: 'ADAPTER_IN_USE' });
    const [out] = await running;
    expect(out!.tokens).toHaveLength(4);
    expect(h.pins).toBe(0);
    await engine.unloadAdapter('all');
    expect(engine.info().freeSlots).toBe(2);
  });
});
