#!/usr/bin/env node
// JSON mode: how long the grammar masks take next to the forward pass, and what computing them
// while the native forward pass runs (StepItem.maskLater) saves over computing them first.
//
//   node apps/worker/bench/json-overlap.mjs [--seqs 16] [--steps 24] [--threads 2] [--backend cpu]
//
// Needs `pnpm build` (engine + worker dist). Generates the engine bench's random Llama model (134M,
// 32000-token byte-fallback vocabulary) once into <repo>/.bench/json-overlap, and drives the engine's
// step API directly: every sequence decodes under its own xgrammar matcher of one JSON schema.
// Three runs of the same steps: no masks (the forward pass alone), masks first then the step
// (serial), masks as late masks (overlapped). Outputs of the serial and overlapped runs must match.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const { values: a } = parseArgs({
  options: {
    seqs: { type: 'string', default: '16' },
    steps: { type: 'string', default: '24' },
    threads: { type: 'string', default: '2' },
    backend: { type: 'string', default: 'cpu' },
  },
});
const S = Number(a.seqs),
  STEPS = Number(a.steps);

const { generateModel } = await import(pathToFileURL(join(repo, 'packages/engine/bench/gen-model.mjs')).href);
const { Engine } = await import(pathToFileURL(join(repo, 'packages/engine/dist/index.js')).href);
const { StructuredOutput } = await import(
  pathToFileURL(join(repo, 'apps/worker/dist/structured/structured-output.js')).href
);

const dir = join(repo, '.bench', 'json-overlap');
if (!existsSync(join(dir, 'model.safetensors'))) generateModel({ out: dir });
const e = await Engine.load(dir, {
  backend: a.backend,
  threads: Number(a.threads),
  kvCacheTokens: S * (STEPS + 64) + 256,
  maxBatchTokens: 4096,
});
const so = new StructuredOutput({ modelDir: dir, vocab: e.config.vocab, stopTokenIds: [...e.eosTokenIds] });
const schema = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 40 },
    n: { type: 'integer' },
    tags: { type: 'array', items: { type: 'string' } },
  },
  required: ['name', 'n', 'tags'],
};
const grammar = await so.compile({ schema });

async function run(mode) {
  const seqs = await Promise.all(
    Array.from({ length: S }, async (_, i) => ({
      prompt: Array.from({ length: 8 }, (_, k) => 400 + ((i * 31 + k * 7) % 1000)),
      blocks: e.allocateBlocks(Math.ceil((8 + STEPS + 1) / e.kvUsage().blockSize)),
      out: [],
      computed: 0,
      c: mode === 'none' ? null : await so.constraint(grammar),
    })),
  );
  let stepMs = 0,
    maskMs = 0;
  try {
    for (let step = 0; step <= STEPS; step++) {
      const items = seqs.map((s) => ({
        tokens: step === 0 ? s.prompt : [s.out.at(-1)],
        startPosition: s.computed,
        blockTable: s.blocks,
        adapterSlot: -1,
        sample: true,
        allLogits: false,
        sampling: {
          maxTokens: 1000,
          temperature: 0.8,
          topK: 0,
          topP: 1,
          minP: 0,
          seed: 7,
          repetitionPenalty: 1,
          presencePenalty: 0,
          frequencyPenalty: 0,
          stopTokenIds: [],
          ignoreEos: true,
        },
        draw: step,
      }));
      const t0 = performance.now();
      if (mode === 'serial') {
        const masks = await Promise.all(seqs.map((s) => (s.c.complete ? null : s.c.nextMask())));
        maskMs += performance.now() - t0;
        items.forEach((it, i) => (it.mask = masks[i]));
      } else if (mode === 'late') {
        items.forEach((it, i) => {
          if (!seqs[i].c.complete) it.maskLater = () => seqs[i].c.nextMask();
        });
      }
      const rs = await e.runStep(items);
      stepMs += performance.now() - t0;
      rs.forEach((r, i) => {
        const s = seqs[i];
        s.computed += items[i].tokens.length;
        s.out.push(r.token);
        if (s.c && !s.c.complete) s.c.accept(r.token);
      });
    }
  } finally {
    for (const s of seqs) {
      e.releaseBlocks(s.blocks);
      s.c?.dispose();
    }
  }
  return { perStep: stepMs / (STEPS + 1), maskPerStep: maskMs / (STEPS + 1), outs: seqs.map((s) => s.out.join(',')) };
}

await run('late'); // warm-up
// Interleaved repeats, best of each (the machine may be shared).
const best = { none: null, serial: null, late: null };
for (let r = 0; r < 3; r++) {
  for (const mode of ['none', 'serial', 'late']) {
    const x = await run(mode);
    if (!best[mode] || x.perStep < best[mode].perStep) best[mode] = x;
  }
}
const { none, serial, late } = best;
console.log(
  JSON.stringify({
    backend: e.backend,
    seqs: S,
    steps: STEPS + 1,
    vocab: e.config.vocab,
    stepNoMasksMs: +none.perStep.toFixed(2),
    masksAloneMs: +serial.maskPerStep.toFixed(2),
    stepSerialMasksMs: +serial.perStep.toFixed(2),
    stepLateMasksMs: +late.perStep.toFixed(2),
    sameOutputs: serial.outs.every((o, i) => o === late.outs[i]),
  }),
);
await e.close();
