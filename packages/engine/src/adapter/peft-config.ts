// PEFT adapter_config.json: which modules of the base model an adapter targets, and each module's
// rank and scaling, resolved with PEFT's own matching rules (peft 0.10 check_target_module_exists
// and the rank_pattern / alpha_pattern lookup), so an adapter behaves here as it does in PEFT.
import type { ModelConfig } from '../config.js';
import { EngineError } from '../errors.js';

export const MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type ModuleName = (typeof MODULES)[number];
const PARENT: Record<ModuleName, string> = {
  q_proj: 'self_attn', k_proj: 'self_attn', v_proj: 'self_attn', o_proj: 'self_attn', gate_proj: 'mlp', up_proj: 'mlp', down_proj: 'mlp',
};

export interface PeftLoraConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  fanInFanOut: boolean;
  targetModules: string[] | string | null;
  layersToTransform: number[] | number | null;
  layersPattern: string[] | string | null;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  baseModel: string | undefined;
}

/** Per adapted module: its rank and scaling. Keyed `${layer}.${module}`. */
export interface ResolvedModule { layer: number; module: ModuleName; rank: number; scaling: number; name: string }

function cfgErr(msg: string): EngineError {
  return new EngineError('ADAPTER_CONFIG', `adapter_config.json: ${msg}`);
}
function unsupported(msg: string): EngineError {
  return new EngineError('ADAPTER_UNSUPPORTED', msg);
}

/** Python `re` patterns used by PEFT configs are, for what adapters use, valid JS patterns. */
function pyRegex(src: string, anchored: 'full' | 'start', what: string): RegExp {
  try {
    return new RegExp(anchored === 'full' ? `^(?:${src})$` : `^(?:${src})`);
  } catch (e) {
    throw cfgErr(`${what} ${JSON.stringify(src)} is not a valid regular expression (${(e as Error).message})`);
  }
}

export function parsePeftConfig(raw: unknown): PeftLoraConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw cfgErr('must be a JSON object');
  const c = raw as Record<string, unknown>;
  if (c.peft_type !== undefined && c.peft_type !== 'LORA') throw unsupported(`peft_type ${JSON.stringify(c.peft_type)} is not supported (only LORA)`);
  if (c.use_dora === true) throw unsupported('DoRA adapters (use_dora: true) are not supported');
  if (Array.isArray(c.modules_to_save) ? c.modules_to_save.length > 0 : c.modules_to_save != null) {
    throw unsupported(`modules_to_save (${JSON.stringify(c.modules_to_save)}) is not supported: the adapter would replace whole base-model modules`);
  }
  if (c.layer_replication != null) throw unsupported('layer_replication is not supported');
  if (c.bias !== undefined && c.bias !== 'none') throw unsupported(`bias ${JSON.stringify(c.bias)} is not supported (only "none")`);
  const r = c.r ?? 8;
  if (typeof r !== 'number' || !Number.isInteger(r) || r <= 0) throw cfgErr(`r must be a positive integer, got ${JSON.stringify(c.r)}`);
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw cfgErr(`lora_alpha must be a number, got ${JSON.stringify(c.lora_alpha)}`);
  const tm = c.target_modules ?? null;
  if (!(tm === null || typeof tm === 'string' || (Array.isArray(tm) && tm.every((x) => typeof x === 'string')))) {
    throw cfgErr('target_modules must be a list of names, a regex string or null');
  }
  const ltt = c.layers_to_transform ?? null;
  if (!(ltt === null || Number.isInteger(ltt) || (Array.isArray(ltt) && ltt.every((x) => Number.isInteger(x))))) {
    throw cfgErr('layers_to_transform must be an integer or a list of integers');
  }
  const lp = c.layers_pattern ?? null;
  if (!(lp === null || typeof lp === 'string' || (Array.isArray(lp) && lp.every((x) => typeof x === 'string')))) throw cfgErr('layers_pattern must be a string or a list of strings');
  const pattern = (v: unknown, what: string, int: boolean): Record<string, number> => {
    if (v == null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) throw cfgErr(`${what} must be an object`);
    for (const [k, x] of Object.entries(v)) {
      if (typeof x !== 'number' || !Number.isFinite(x) || (int && (!Number.isInteger(x) || x <= 0))) throw cfgErr(`${what}.${k} must be a ${int ? 'positive integer' : 'number'}`);
    }
    return v as Record<string, number>;
  };
  for (const k of ['use_rslora', 'fan_in_fan_out']) {
    if (c[k] !== undefined && typeof c[k] !== 'boolean') throw cfgErr(`${k} must be a boolean`);
  }
  return {
    r,
    loraAlpha: alpha,
    useRslora: c.use_rslora === true,
    fanInFanOut: c.fan_in_fan_out === true,
    targetModules: tm as PeftLoraConfig['targetModules'],
    layersToTransform: ltt as PeftLoraConfig['layersToTransform'],
    layersPattern: lp as PeftLoraConfig['layersPattern'],
    rankPattern: pattern(c.rank_pattern, 'rank_pattern', true),
    alphaPattern: pattern(c.alpha_pattern, 'alpha_pattern', false),
    baseModel: typeof c.base_model_name_or_path === 'string' ? c.base_model_name_or_path : undefined,
  };
}

/** Every module name of a Llama-family causal LM, as named_modules() lists them. */
function baseModuleNames(layers: number): string[] {
  const names = ['model', 'model.embed_tokens', 'model.layers', 'model.norm', 'lm_head'];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    names.push(p, `${p}.self_attn`, `${p}.mlp`, `${p}.mlp.act_fn`, `${p}.input_layernorm`, `${p}.post_attention_layernorm`, `${p}.self_attn.rotary_emb`);
    for (const m of MODULES) names.push(`${p}.${PARENT[m]}.${m}`);
  }
  return names;
}

function targetMatches(cfg: PeftLoraConfig, key: string, targets: string[] | string): boolean {
  if (typeof targets === 'string') return pyRegex(targets, 'full', 'target_modules').test(key);
  if (targets.includes(key)) return true;
  let found = targets.some((t) => key.endsWith(`.${t}`));
  const idx = cfg.layersToTransform;
  const usingIdx = idx !== null && (Array.isArray(idx) ? idx.length > 0 : true);
  if (usingIdx && found) {
    let m: RegExpExecArray | null = null;
    const patterns = cfg.layersPattern === null || cfg.layersPattern.length === 0 ? null : Array.isArray(cfg.layersPattern) ? cfg.layersPattern : [cfg.layersPattern];
    if (!patterns) m = /^.*\.[^.]*\.(\d+)\./.exec(key);
    else for (const p of patterns) if ((m = pyRegex(`.*\\.${p}\\.(\\d+)\\.`, 'start', 'layers_pattern').exec(key))) break;
    if (!m) found = false;
    else found = Array.isArray(idx) ? idx.includes(Number(m[1])) : Number(m[1]) === idx;
  }
  return found;
}

export interface ResolveOptions { maxRank: number }

/** Resolves which modules the adapter adapts, with rank and scaling, or refuses it. */
export function resolveAdapterModules(cfg: PeftLoraConfig, model: ModelConfig, opts: ResolveOptions): ResolvedModule[] {
  // PEFT's default targets for the llama, mistral and qwen2 model types.
  const targets = cfg.targetModules ?? ['q_proj', 'v_proj'];
  const out: ResolvedModule[] = [];
  const all = targets === 'all-linear';
  const patternKeys = [...Object.keys(cfg.rankPattern), ...Object.keys(cfg.alphaPattern)];
  for (const name of baseModuleNames(model.layers)) {
    const isLinear = /\.(q|k|v|o|gate|up|down)_proj$/.test(name);
    const hit = all ? isLinear : targetMatches(cfg, name, targets);
    if (!hit) continue;
    if (name === 'model.embed_tokens' || name === 'lm_head') throw unsupported(`LoRA on ${name} (embeddings / lm_head) is not supported`);
    if (!isLinear) throw unsupported(`target module ${name} is not a linear projection; only ${MODULES.join(', ')} can be adapted`);
    const m = /^model\.layers\.(\d+)\.\w+\.(\w+)$/.exec(name)!;
    const patternKey = patternKeys.find((k) => pyRegex(`.*\\.${k}$`, 'start', 'rank_pattern/alpha_pattern key').test(name)) ?? name;
    const rank = cfg.rankPattern[patternKey] ?? cfg.r;
    const alpha = cfg.alphaPattern[patternKey] ?? cfg.loraAlpha;
    if (rank > opts.maxRank) throw unsupported(`${name} has LoRA rank ${rank}, above this engine's maxLoraRank ${opts.maxRank}`);
    out.push({ layer: Number(m[1]), module: m[2] as ModuleName, rank, scaling: cfg.useRslora ? alpha / Math.sqrt(rank) : alpha / rank, name });
  }
  if (out.length === 0) throw cfgErr(`target_modules ${JSON.stringify(targets)} match no module of the base model`);
  return out;
}
