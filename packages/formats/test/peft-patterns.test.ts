// PEFT's regex fields (target_modules, layers_pattern, rank_pattern / alpha_pattern keys) are
// matched with RE2 (re2js): Python re.fullmatch / re.match semantics as PEFT uses them, linear time
// whatever the pattern, RE2-inexpressible patterns refused by name, and the async resolver hands
// the event loop back and gives up past its budget.
import { describe, expect, it } from 'vitest';
import {
  EngineError,
  MAX_PATTERN_CHARS,
  MAX_PATTERN_REPEATS,
  parseModelConfig,
  parsePeftConfig,
  resolveAdapterModules,
  resolveAdapterModulesAsync,
} from '../src/index.js';

const model = parseModelConfig({
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 172,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_hidden_layers: 4,
  vocab_size: 512,
  max_position_embeddings: 256,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
});
const resolve = (cfg: Record<string, unknown>) =>
  resolveAdapterModules(parsePeftConfig({ r: 8, lora_alpha: 16, ...cfg }), model, { maxRank: 64 });
const names = (cfg: Record<string, unknown>) => resolve(cfg).map((m) => m.name);

function refusal(f: () => unknown): EngineError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(EngineError);
    return e as EngineError;
  }
  throw new Error('expected a refusal');
}

describe('PEFT patterns under RE2', () => {
  it('target_modules as a string is re.fullmatch over the whole module name', () => {
    expect(refusal(() => resolve({ target_modules: 'q_proj' })).message).toMatch(/match no module/);
    expect(names({ target_modules: '.*\\.(q_proj|v_proj)' })).toHaveLength(8);
    // The alternation is anchored as a whole, so `mlp\..*` in it only matches names that start with mlp.
    expect(names({ target_modules: 'mlp\\..*_proj|.*\\.0\\.self_attn\\.k_proj' })).toEqual([
      'model.layers.0.self_attn.k_proj',
    ]);
    // Python's named groups are RE2 syntax too.
    expect(names({ target_modules: '.*\\.(?P<layer>[02])\\.mlp\\.up_proj' })).toEqual([
      'model.layers.0.mlp.up_proj',
      'model.layers.2.mlp.up_proj',
    ]);
  });

  it('layers_pattern (re.match) with layers_to_transform, and rank_pattern / alpha_pattern keys (re.match .*\\.key$)', () => {
    expect(names({ target_modules: ['q_proj'], layers_to_transform: [1, 3], layers_pattern: 'layers' })).toEqual([
      'model.layers.1.self_attn.q_proj',
      'model.layers.3.self_attn.q_proj',
    ]);
    expect(
      refusal(() => resolve({ target_modules: ['q_proj'], layers_to_transform: [1], layers_pattern: 'blocks' }))
        .message,
    ).toMatch(/match no module/);
    const mods = resolve({
      target_modules: ['q_proj', 'down_proj'],
      rank_pattern: { 'layers\\.[12]\\.self_attn\\.q_proj': 4 },
      alpha_pattern: { down_proj: 64 },
    });
    const byName = new Map(mods.map((m) => [m.name, m]));
    expect(byName.get('model.layers.1.self_attn.q_proj')).toMatchObject({ rank: 4, scaling: 4 });
    expect(byName.get('model.layers.0.self_attn.q_proj')).toMatchObject({ rank: 8, scaling: 2 });
    expect(byName.get('model.layers.3.mlp.down_proj')).toMatchObject({ rank: 8, scaling: 8 });
  });

  it('a catastrophically backtracking pattern resolves in linear time', () => {
    // JS RegExp needs minutes per module name on this one (each name almost matches); RE2 scans each name once.
    const evil = '(([a-z_0-9]+\\.?)+)+x';
    expect(refusal(() => resolve({ target_modules: evil })).message).toMatch(/match no module/);
    expect(
      resolve({ target_modules: ['q_proj'], rank_pattern: { '(([a-z_0-9]+\\.?)+)+x': 2, '(.*a){20}': 4 } }).map(
        (m) => m.rank,
      ),
    ).toEqual([8, 8, 8, 8]);
    expect(names({ target_modules: '(.*a+)+.*q_proj' })).toHaveLength(4);
  }, 5000);

  it('patterns RE2 cannot express, or too long, are refused with the field named', () => {
    for (const [cfg, field] of [
      [{ target_modules: '(.*)\\1q_proj' }, 'target_modules'],
      [{ target_modules: '.*(?=q_proj).*' }, 'target_modules'],
      [{ target_modules: ['q_proj'], layers_to_transform: 1, layers_pattern: '(?<!x)layers' }, 'layers_pattern'],
      [{ target_modules: ['q_proj'], rank_pattern: { '(?P=x)': 4 } }, 'rank_pattern/alpha_pattern key'],
    ] as const) {
      const e = refusal(() => resolve(cfg));
      expect(e.code).toBe('ADAPTER_CONFIG');
      expect(e.message).toContain(field);
      expect(e.message).toMatch(/RE2 syntax .*no backreferences, lookahead or lookbehind/);
    }
    expect(refusal(() => resolve({ target_modules: 'a'.repeat(MAX_PATTERN_CHARS + 1) })).message).toMatch(
      /target_modules is a regular expression of 1025 characters, more than the 1024 allowed/,
    );
    // Compiling is not sliced, so what it may cost is bounded: at most 32 repetition operators.
    expect(refusal(() => resolve({ target_modules: '(x|.|.*)*'.repeat(MAX_PATTERN_REPEATS) })).message).toMatch(
      /has 64 repetition operators .*more than the 32 allowed/,
    );
    expect(names({ target_modules: `[*+?{]*${'(x|.*)*'.repeat(15)}q_proj` })).toHaveLength(4);
  });

  it('the async resolver yields between slices and refuses past its budget (clock driven by the test)', async () => {
    const cfg = parsePeftConfig({ r: 8, target_modules: '.*_proj', rank_pattern: { q_proj: 4 } });
    let t = 0;
    const now = (): number => t++; // every reading is 1 ms later
    let yielded = 0;
    const counter = setInterval(() => yielded++, 0);
    const mods = await resolveAdapterModulesAsync(cfg, model, { maxRank: 64, sliceMs: 3, budgetMs: 10_000, now });
    clearInterval(counter);
    expect(mods).toEqual(resolveAdapterModules(cfg, model, { maxRank: 64 }));
    t = 0;
    const e = await resolveAdapterModulesAsync(cfg, model, { maxRank: 64, sliceMs: 3, budgetMs: 20, now }).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(EngineError);
    expect((e as EngineError).code).toBe('ADAPTER_UNSUPPORTED');
    expect((e as EngineError).message).toMatch(/takes more than 20 ms/);
  });
});
