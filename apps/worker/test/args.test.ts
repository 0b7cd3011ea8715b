// loraplex-worker's command line.
import { describe, expect, it } from 'vitest';
import { parseCli } from '../src/args.js';

describe('parseCli', () => {
  it('reads every option', () => {
    const o = parseCli([
      '--model',
      '/m',
      '--port',
      '9000',
      '--adapter-dir',
      '/a',
      '--max-adapters',
      '4',
      '--max-lora-rank',
      '32',
      '--kv-cache-tokens',
      '4096',
      '--max-batch-tokens',
      '256',
      '--threads',
      '2',
    ]);
    expect(o).toMatchObject({
      model: '/m',
      port: 9000,
      adapterDir: '/a',
      maxAdapters: 4,
      maxLoraRank: 32,
      kvCacheTokens: 4096,
      maxBatchTokens: 256,
      threads: 2,
      host: '127.0.0.1',
      backend: 'auto',
    });
  });

  it('defaults the port to 8000 and leaves engine defaults alone', () => {
    const o = parseCli(['--model', '/m']);
    expect(o.port).toBe(8000);
    expect(o.maxAdapters).toBeUndefined();
  });

  it('rejects a missing model, unknown flags and bad numbers', () => {
    expect(() => parseCli([])).toThrow(/--model is required/);
    expect(() => parseCli(['--model', '/m', '--bogus'])).toThrow(/bogus/);
    expect(() => parseCli(['--model', '/m', '--max-adapters', 'x'])).toThrow(/--max-adapters must be an integer/);
    expect(() => parseCli(['--model', '/m', '--backend', 'tpu'])).toThrow(/--backend/);
  });
});
