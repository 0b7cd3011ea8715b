// Masks computed while the forward pass runs (StepItem.maskLater, JSON mode's overlap): the native
// step starts with placeholder masks and waits for them before sampling. Deferred and immediate
// masks give identical tokens and log-probabilities; a failed mask fails only its step.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, type StepItem, type StepItemResult } from '../src/index.js';
import { TEST_BACKEND } from './helpers/backend.js';
import { adapterDir, modelDir } from './helpers/fixtures.js';

let e: Engine;
beforeAll(async () => {
  e = await Engine.load(modelDir('llama'), { backend: TEST_BACKEND, threads: 2, maxAdapters: 2, kvCacheTokens: 2048 });
  await e.loadAdapter('a', adapterDir('llama', 'lora_all_r8'));
});
afterAll(async () => {
  await e?.close();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A mask for sequence `seq` at draw `step`: a pseudo-random third of the vocabulary is forbidden. */
function maskFor(seq: number, step: number, V: number): Uint32Array {
  const m = new Uint32Array(Math.ceil(V / 32));
  for (let t = 0; t < V; t++)
    if (((t * 2654435761 + seq * 97 + step * 31) >>> 0) % 3 !== 0) m[t >>> 5]! |= 1 << (t & 31);
  return m;
}

interface Seq {
  prompt: number[];
  slot: number;
  masked: boolean;
  seed: number;
  temperature: number;
  blocks: number[];
  out: number[];
  logprobs: number[];
  computed: number;
}

/** Prefill then `steps` decode steps for every sequence together; masks immediate or late. */
async function drive(late: boolean, steps: number): Promise<Seq[]> {
  const V = e.config.vocab;
  const seqs: Seq[] = [0, 1, 2, 3, 4, 5].map((i) => ({
    prompt: Array.from({ length: 5 + i }, (_, k) => (k * 13 + i * 7 + 3) % V),
    slot: i % 3 === 0 ? e.adapterSlot('a') : -1,
    masked: i % 2 === 0,
    seed: 40 + i,
    temperature: i < 3 ? 0 : 0.9,
    blocks: [],
    out: [],
    logprobs: [],
    computed: 0,
  }));
  for (const s of seqs) s.blocks = e.allocateBlocks(Math.ceil((s.prompt.length + steps + 1) / e.kvUsage().blockSize));
  try {
    for (let step = 0; step <= steps; step++) {
      const items: StepItem[] = seqs.map((s, i) => {
        const tokens = step === 0 ? s.prompt : [s.out[s.out.length - 1]!];
        const mask = s.masked ? maskFor(i, step, V) : null;
        const it: StepItem = {
          tokens,
          startPosition: s.computed,
          blockTable: s.blocks,
          adapterSlot: s.slot,
          sample: true,
          allLogits: false,
          sampling: { ...resolvedSampling(s), seed: s.seed },
          draw: step,
        };
        if (!s.masked) it.mask = null;
        else if (late)
          it.maskLater = async () => {
            await sleep(2); // resolves well after the native step started
            return mask;
          };
        else it.mask = mask;
        return it;
      });
      const rs: StepItemResult[] = await e.runStep(items);
      rs.forEach((r, i) => {
        const s = seqs[i]!;
        s.computed += items[i]!.tokens.length;
        s.out.push(r.token!);
        s.logprobs.push(r.logprob!);
      });
    }
  } finally {
    for (const s of seqs) e.releaseBlocks(s.blocks);
  }
  return seqs;
}

function resolvedSampling(s: Seq) {
  return {
    maxTokens: 100,
    temperature: s.temperature,
    topK: 0,
    topP: 1,
    minP: 0,
    seed: s.seed,
    repetitionPenalty: 1,
    presencePenalty: 0,
    frequencyPenalty: 0,
    stopTokenIds: [],
    ignoreEos: true,
    logprobs: 0,
  };
}

describe('late masks', () => {
  it('give the same tokens and log-probabilities as immediate masks, and constrain every draw', async () => {
    const now = await drive(false, 12);
    const later = await drive(true, 12);
    expect(later.map((s) => s.out)).toEqual(now.map((s) => s.out));
    expect(later.map((s) => s.logprobs)).toEqual(now.map((s) => s.logprobs));
    const V = e.config.vocab;
    now.forEach((s, i) => {
      if (!s.masked) return;
      s.out.forEach((t, step) => expect((maskFor(i, step, V)[t >>> 5]! >>> (t & 31)) & 1).toBe(1));
    });
  });

  it('the mask is computed while the step is in flight; the step waits for it', async () => {
    const V = e.config.vocab;
    const blocks = e.allocateBlocks(1);
    try {
      const events: string[] = [];
      const only = 7;
      const mask = new Uint32Array(Math.ceil(V / 32));
      mask[only >>> 5]! |= 1 << (only & 31);
      const step = e
        .runStep([
          {
            tokens: [1, 2, 3],
            startPosition: 0,
            blockTable: blocks,
            adapterSlot: -1,
            sample: true,
            allLogits: false,
            draw: 0,
            maskLater: async () => {
              events.push('mask started');
              await sleep(30);
              events.push('mask ready');
              return mask;
            },
          },
        ])
        .then((r) => {
          events.push('step done');
          return r;
        });
      const [r] = await step;
      expect(r!.token).toBe(only);
      expect(events).toEqual(['mask started', 'mask ready', 'step done']);
    } finally {
      e.releaseBlocks(blocks);
    }
  });

  it('a failed late mask fails its step only; the next step runs', async () => {
    const blocks = e.allocateBlocks(1);
    try {
      const item = (maskLater: StepItem['maskLater']): StepItem => ({
        tokens: [4, 5],
        startPosition: 0,
        blockTable: blocks,
        adapterSlot: -1,
        sample: true,
        allLogits: false,
        draw: 0,
        maskLater,
      });
      await expect(
        e.runStep([
          item(async () => {
            throw new Error('grammar broke');
          }),
        ]),
      ).rejects.toThrow(/grammar broke/);
      await expect(
        e.runStep([
          item(() => {
            throw new Error('sync failure');
          }),
        ]),
      ).rejects.toThrow(/sync failure/);
      const [r] = await e.runStep([item(async () => null)]);
      expect(r!.token).toBeGreaterThanOrEqual(0);
      // An all-zero late mask is the same error as an all-zero immediate one.
      await expect(e.runStep([item(async () => new Uint32Array(Math.ceil(e.config.vocab / 32)))])).rejects.toThrow(
        /allows no token/,
      );
    } finally {
      e.releaseBlocks(blocks);
    }
  });
});
