// `pnpm start` for now: loads a model (default: the bundled hf-tiny Llama fixture) and its adapters,
// and decodes a mixed batch (one request per adapter plus the base model) in one generate() call.
// Usage: node dist/demo.js [modelDir] [adapterDir ...]
import { readdirSync, existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from './engine.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixture = join(here, '..', 'test', 'fixtures', 'hf-tiny', 'llama');
const modelDir = process.argv[2] ?? join(fixture, 'base');
const adapterDirs =
  process.argv.length > 3
    ? process.argv.slice(3)
    : existsSync(join(fixture, 'adapters')) && !process.argv[2]
      ? readdirSync(join(fixture, 'adapters')).map((a) => join(fixture, 'adapters', a))
      : [];

const engine = await Engine.load(modelDir, {
  backend: 'auto',
  maxAdapters: Math.max(1, adapterDirs.length),
  maxLoraRank: 64,
});
console.log(
  `loaded ${modelDir} on the ${engine.backend} backend (${engine.config.architecture}, ${engine.config.layers} layers, vocab ${engine.config.vocab})`,
);
for (const d of adapterDirs) {
  const a = await engine.loadAdapter(basename(d), d);
  console.log(`adapter ${a.name}: rank ${a.rank}, ${a.modules} modules, slot ${a.slot}`);
}
const prompt = engine.tokenizer ? 'The license grants' : [22, 506, 217, 201, 137];
const names: Array<string | undefined> = [undefined, ...adapterDirs.map((d) => basename(d))];
const t0 = performance.now();
const outs = await engine.generate(
  names.map((adapter) => ({ prompt, adapter, sampling: { maxTokens: 16, temperature: 0, ignoreEos: true } })),
);
const ms = performance.now() - t0;
outs.forEach((o, i) =>
  console.log(`[${names[i] ?? 'base'}] ${JSON.stringify(o.text)} tokens=${JSON.stringify(o.tokens)}`),
);
console.log(`${outs.length} requests with ${names.length} different adapters decoded together in ${ms.toFixed(1)} ms`);
if (engine.config.vocab === 512)
  console.log(
    '(the bundled fixture model has random weights: the text is meaningless; pass a real Hugging Face model directory to see real text)',
  );
await engine.close();
