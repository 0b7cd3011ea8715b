// The engine against real transformers + PEFT outputs (test/fixtures/hf-tiny: llama, qwen2;
// hf-tiny-v2: qwen3, llama_dora with DoRA adapters served unmerged): prompt logits at every position within 1e-4, greedy continuations token for
// token, decode-step logits through the paged KV cache, merged-weight references, and the
// heterogeneous batch.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/index.js';
import { readSafetensorsHeader } from '@loraplex/formats';
import { contiguousTensor, writeTorchCheckpoint } from '../../formats/test/helpers/torch-checkpoint-writer.js';
import { TEST_BACKEND, TEST_TOL } from './helpers/backend.js';
import {
  FIXTURE_SETS,
  adapterDir,
  maxAbsDiff,
  modelDir,
  reference,
  referenceLogits,
  type FixtureModel,
} from './helpers/fixtures.js';

const TOL = TEST_TOL; // 1e-4 on the CPU, 1e-3 on the GPU (LORAPLEX_TEST_BACKEND=cuda)

describe.each(FIXTURE_SETS)(
  '$model fixture',
  ({ model: m, adapters }: { model: FixtureModel; adapters: readonly string[] }) => {
    const ref = reference(m);
    const logits = referenceLogits(m);
    let engine: Engine;

    beforeAll(async () => {
      engine = await Engine.load(modelDir(m), { backend: TEST_BACKEND, maxAdapters: 4, maxLoraRank: 16, threads: 2 });
      for (const a of adapters) await engine.loadAdapter(a, adapterDir(m, a));
    });
    afterAll(async () => engine?.close());

    const variants = ['__base__', ...adapters];

    it.each(variants)('%s: prompt logits and greedy tokens match transformers + PEFT', async (variant) => {
      const adapter = variant === '__base__' ? undefined : variant;
      const out = await engine.generate(
        ref.prompts.map((prompt) => ({
          prompt,
          adapter,
          sampling: { maxTokens: ref.n_new_tokens, temperature: 0, ignoreEos: true },
          returnPromptLogits: true,
        })),
      );
      ref.prompts.forEach((prompt, i) => {
        const want = logits.get(`${variant}/p${i}/logits`)!;
        expect(want.shape).toEqual([prompt.length, 512]);
        expect(maxAbsDiff(out[i]!.promptLogits!, want.data)).toBeLessThan(TOL);
        expect(out[i]!.tokens).toEqual(ref.variants[variant]![i]!.greedy_tokens);
        expect(out[i]!.finishReason).toBe('length');
      });
    });

    it.each(variants)(
      '%s: decode-step logits through the paged KV cache match generate(output_logits)',
      async (variant) => {
        const slot = variant === '__base__' ? -1 : engine.adapterSlot(variant);
        for (let i = 0; i < ref.prompts.length; i++) {
          const prompt = ref.prompts[i]!;
          const greedy = ref.variants[variant]![i]!.greedy_tokens;
          const want = logits.get(`${variant}/p${i}/gen_logits`)!; // [12, 512]; row k produced greedy token k
          const table = engine.allocateBlocks(Math.ceil((prompt.length + greedy.length) / engine.kvUsage().blockSize));
          try {
            const first = await engine.runStep([
              {
                tokens: prompt,
                startPosition: 0,
                blockTable: table,
                adapterSlot: slot,
                sample: false,
                allLogits: true,
              },
            ]);
            const rows: Float32Array[] = [first[0]!.logits!.slice((prompt.length - 1) * 512)];
            for (let k = 0; k < greedy.length - 1; k++) {
              const r = await engine.runStep([
                {
                  tokens: [greedy[k]!],
                  startPosition: prompt.length + k,
                  blockTable: table,
                  adapterSlot: slot,
                  sample: false,
                  allLogits: true,
                },
              ]);
              rows.push(r[0]!.logits!);
            }
            const got = new Float32Array(rows.length * 512);
            rows.forEach((r, k) => got.set(r, k * 512));
            expect(maxAbsDiff(got, want.data)).toBeLessThan(TOL);
          } finally {
            engine.releaseBlocks(table);
          }
        }
      },
    );

    it.each([...adapters])('%s: unmerged LoRA equals the merged-weight reference', async (adapter) => {
      const out = await engine.generate(
        ref.prompts.map((prompt) => ({
          prompt,
          adapter,
          sampling: { maxTokens: 1, temperature: 0 },
          returnPromptLogits: true,
        })),
      );
      ref.prompts.forEach((_, i) => {
        expect(maxAbsDiff(out[i]!.promptLogits!, logits.get(`merged_${adapter}/p${i}/logits`)!.data)).toBeLessThan(TOL);
        expect(out[i]!.tokens[0]).toBe(ref.merged[adapter]![i]!.greedy_tokens[0]);
      });
    });

    it('heterogeneous batch: every row equals its reference and its single run', async () => {
      const rows = ref.hetero_batch.rows;
      const out = await engine.generate(
        rows.map((r) => ({
          prompt: ref.prompts[r.prompt_index]!,
          adapter: r.adapter === '__base__' ? undefined : r.adapter,
          sampling: { maxTokens: ref.n_new_tokens, temperature: 0, ignoreEos: true },
          returnPromptLogits: true,
        })),
      );
      const hetero = logits.get('hetero/logits')!; // [rows, padded_len, 512], left-padded
      const padded = hetero.shape[1]!;
      rows.forEach((r, i) => {
        expect(out[i]!.tokens).toEqual(r.greedy_tokens);
        const len = ref.prompts[r.prompt_index]!.length;
        const valid = hetero.data.slice((i * padded + (padded - len)) * 512, (i + 1) * padded * 512);
        expect(maxAbsDiff(out[i]!.promptLogits!, valid)).toBeLessThan(TOL);
        expect(
          maxAbsDiff(out[i]!.promptLogits!, logits.get(`${r.adapter}/p${r.prompt_index}/logits`)!.data),
        ).toBeLessThan(TOL);
      });
    });

    it.each([...adapters])(
      '%s: the same adapter saved as adapter_model.bin (torch.save) gives identical results',
      async (adapter) => {
        const dir = mkdtempSync(join(tmpdir(), 'lp-bin-'));
        try {
          const src = join(adapterDir(m, adapter), 'adapter_model.safetensors');
          const header = await readSafetensorsHeader(src);
          const bytes = readFileSync(src);
          const tensors = Object.fromEntries(
            [...header.tensors].map(([name, t]) => [
              name,
              contiguousTensor('F32', t.shape, new Uint8Array(bytes.subarray(t.offset, t.offset + t.byteLength))),
            ]),
          );
          writeFileSync(join(dir, 'adapter_model.bin'), writeTorchCheckpoint(tensors));
          copyFileSync(join(adapterDir(m, adapter), 'adapter_config.json'), join(dir, 'adapter_config.json'));
          await engine.loadAdapter('bin', dir);
          const req = (a: string) => ({
            prompt: ref.prompts[2]!,
            adapter: a,
            sampling: { maxTokens: ref.n_new_tokens, temperature: 0, ignoreEos: true },
            returnPromptLogits: true,
          });
          const [fromBin, fromSt] = await engine.generate([req('bin'), req(adapter)]);
          expect(fromBin!.tokens).toEqual(ref.variants[adapter]![2]!.greedy_tokens);
          expect(fromBin!.promptLogits).toEqual(fromSt!.promptLogits);
        } finally {
          await engine.unloadAdapter('bin').catch(() => undefined);
          rmSync(dir, { recursive: true, force: true });
        }
      },
    );
  },
);
