// PEFT adapter_config.json: which modules of the base model an adapter targets, and each module's
// rank and scaling, resolved with PEFT's own matching rules (peft 0.10 check_target_module_exists
// and the rank_pattern / alpha_pattern lookup), so an adapter behaves here as it does in PEFT.
import type { ModelConfig } from './model-config.js';
import { EngineError } from './errors.js';
import { compilePyRegex, type PyRegex } from './py-regex.js';

export const MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type ModuleName = (typeof MODULES)[number];
/** The submodule each projection lives in: `model.layers.N.<parent>.<module>`. */
export const MODULE_PARENT: Record<ModuleName, string> = {
  q_proj: 'self_attn',
  k_proj: 'self_attn',
  v_proj: 'self_attn',
  o_proj: 'self_attn',
  gate_proj: 'mlp',
  up_proj: 'mlp',
  down_proj: 'mlp',
};

export interface PeftLoraConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  /** DoRA (use_dora): every adapted module also has a magnitude vector [out]. */
  useDora: boolean;
  fanInFanOut: boolean;
  targetModules: string[] | string | null;
  layersToTransform: number[] | number | null;
  layersPattern: string[] | string | null;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  baseModel: string | undefined;
}

/** Per adapted module: its rank and scaling. Keyed `${layer}.${module}`. */
export interface ResolvedModule {
  layer: number;
  module: ModuleName;
  rank: number;
  scaling: number;
  name: string;
}

function cfgErr(msg: string): EngineError {
  return new EngineError('ADAPTER_CONFIG', `adapter_config.json: ${msg}`);
}
function unsupported(msg: string): EngineError {
  return new EngineError('ADAPTER_UNSUPPORTED', msg);
}

export function parsePeftConfig(raw: unknown): PeftLoraConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw cfgErr('must be a JSON object');
  const c = raw as Record<string, unknown>;
  if (c.peft_type !== undefined && c.peft_type !== 'LORA')
    throw unsupported(`peft_type ${JSON.stringify(c.peft_type)} is not supported (only LORA)`);
  if (Array.isArray(c.modules_to_save) ? c.modules_to_save.length > 0 : c.modules_to_save != null) {
    throw unsupported(
      `modules_to_save (${JSON.stringify(c.modules_to_save)}) is not supported: the adapter would replace whole base-model modules`,
    );
  }
  if (c.layer_replication != null) throw unsupported('layer_replication is not supported');
  if (c.bias !== undefined && c.bias !== 'none')
    throw unsupported(`bias ${JSON.stringify(c.bias)} is not supported (only "none")`);
  const r = c.r ?? 8;
  if (typeof r !== 'number' || !Number.isInteger(r) || r <= 0)
    throw cfgErr(`r must be a positive integer, got ${JSON.stringify(c.r)}`);
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha))
    throw cfgErr(`lora_alpha must be a number, got ${JSON.stringify(c.lora_alpha)}`);
  const tm = c.target_modules ?? null;
  if (!(tm === null || typeof tm === 'string' || (Array.isArray(tm) && tm.every((x) => typeof x === 'string')))) {
    throw cfgErr('target_modules must be a list of names, a regex string or null');
  }
  const ltt = c.layers_to_transform ?? null;
  if (!(ltt === null || Number.isInteger(ltt) || (Array.isArray(ltt) && ltt.every((x) => Number.isInteger(x))))) {
    throw cfgErr('layers_to_transform must be an integer or a list of integers');
  }
  const lp = c.layers_pattern ?? null;
  if (!(lp === null || typeof lp === 'string' || (Array.isArray(lp) && lp.every((x) => typeof x === 'string'))))
    throw cfgErr('layers_pattern must be a string or a list of strings');
  const pattern = (v: unknown, what: string, int: boolean): Record<string, number> => {
    if (v == null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) throw cfgErr(`${what} must be an object`);
    for (const [k, x] of Object.entries(v)) {
      if (typeof x !== 'number' || !Number.isFinite(x) || (int && (!Number.isInteger(x) || x <= 0)))
        throw cfgErr(`${what}.${k} must be a ${int ? 'positive integer' : 'number'}`);
    }
    return v as Record<string, number>;
  };
  for (const k of ['use_rslora', 'fan_in_fan_out', 'use_dora']) {
    if (c[k] !== undefined && typeof c[k] !== 'boolean') throw cfgErr(`${k} must be a boolean`);
  }
  return {
    r,
    loraAlpha: alpha,
    useRslora: c.use_rslora === true,
    useDora: c.use_dora === true,
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
function baseModuleNames(model: ModelConfig): string[] {
  const layers = model.layers;
  const names = ['model', 'model.embed_tokens', 'model.layers', 'model.norm', 'lm_head'];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    names.push(
      p,
      `${p}.self_attn`,
      `${p}.mlp`,
      `${p}.mlp.act_fn`,
      `${p}.input_layernorm`,
      `${p}.post_attention_layernorm`,
      `${p}.self_attn.rotary_emb`,
    );
    if (model.qkNorm) names.push(`${p}.self_attn.q_norm`, `${p}.self_attn.k_norm`); // Qwen3: targeting them is refused
    for (const m of MODULES) names.push(`${p}.${MODULE_PARENT[m]}.${m}`);
  }
  return names;
}

/** The config's patterns, each compiled once when first needed (RE2: linear-time matching, see py-regex.ts). */
class Matchers {
  private target: PyRegex | undefined;
  private layers: PyRegex[] | undefined;
  private readonly keys = new Map<string, PyRegex>();
  readonly patternKeys: string[];

  constructor(private readonly cfg: PeftLoraConfig) {
    this.patternKeys = [...Object.keys(cfg.rankPattern), ...Object.keys(cfg.alphaPattern)];
  }

  /** PEFT: re.fullmatch(target_modules, key) when target_modules is a string. */
  targetRegex(source: string): PyRegex {
    return (this.target ??= compilePyRegex(source, 'target_modules', cfgErr));
  }

  /** PEFT: re.match(rf".*\.{layer_pattern}\.(\d+)\.", key) for each layers_pattern; null = PEFT's default. */
  layerRegexes(): PyRegex[] | null {
    const lp = this.cfg.layersPattern;
    if (lp === null || lp.length === 0) return null;
    return (this.layers ??= (Array.isArray(lp) ? lp : [lp]).map((p) =>
      compilePyRegex(`.*\\.${p}\\.(\\d+)\\.`, `layers_pattern ${JSON.stringify(p)}`, cfgErr),
    ));
  }

  /** PEFT: re.match(rf".*\.{key}$", name) for a rank_pattern / alpha_pattern key. */
  keyRegex(key: string): PyRegex {
    let re = this.keys.get(key);
    if (!re)
      this.keys.set(
        key,
        (re = compilePyRegex(`.*\\.${key}$`, `rank_pattern/alpha_pattern key ${JSON.stringify(key)}`, cfgErr)),
      );
    return re;
  }
}

function targetMatches(cfg: PeftLoraConfig, key: string, targets: string[] | string, re: Matchers): boolean {
  if (typeof targets === 'string') return re.targetRegex(targets).fullmatch(key);
  if (targets.includes(key)) return true;
  let found = targets.some((t) => key.endsWith(`.${t}`));
  const idx = cfg.layersToTransform;
  const usingIdx = idx !== null && (Array.isArray(idx) ? idx.length > 0 : true);
  if (usingIdx && found) {
    let m: Array<string | null> | null = null;
    const layers = re.layerRegexes();
    if (!layers) m = /^.*\.[^.]*\.(\d+)\./.exec(key);
    else for (const p of layers) if ((m = p.match(key))) break;
    if (!m) found = false;
    else found = Array.isArray(idx) ? idx.includes(Number(m[1])) : Number(m[1]) === idx;
  }
  return found;
}

export interface ResolveOptions {
  maxRank: number;
}

/**
 * The resolution as steps: it yields after each module name and each rank/alpha pattern tried, so
 * the async form can give the event loop back between them (one step is one linear-time match).
 */
function* resolveSteps(
  cfg: PeftLoraConfig,
  model: ModelConfig,
  opts: ResolveOptions,
): Generator<void, ResolvedModule[]> {
  // PEFT's default targets for the llama, mistral, qwen2 and qwen3 model types.
  const targets = cfg.targetModules ?? ['q_proj', 'v_proj'];
  const out: ResolvedModule[] = [];
  const all = targets === 'all-linear';
  const re = new Matchers(cfg);
  for (const name of baseModuleNames(model)) {
    yield;
    const isLinear = /\.(q|k|v|o|gate|up|down)_proj$/.test(name);
    const hit = all ? isLinear : targetMatches(cfg, name, targets, re);
    if (!hit) continue;
    if (name === 'model.embed_tokens' || name === 'lm_head')
      throw unsupported(`LoRA on ${name} (embeddings / lm_head) is not supported`);
    if (!isLinear)
      throw unsupported(`target module ${name} is not a linear projection; only ${MODULES.join(', ')} can be adapted`);
    const m = /^model\.layers\.(\d+)\.\w+\.(\w+)$/.exec(name)!;
    let patternKey = name;
    for (const k of re.patternKeys) {
      yield;
      if (re.keyRegex(k).match(name) !== null) {
        patternKey = k;
        break;
      }
    }
    const rank = cfg.rankPattern[patternKey] ?? cfg.r;
    const alpha = cfg.alphaPattern[patternKey] ?? cfg.loraAlpha;
    if (rank > opts.maxRank)
      throw unsupported(`${name} has LoRA rank ${rank}, above this engine's maxLoraRank ${opts.maxRank}`);
    out.push({
      layer: Number(m[1]),
      module: m[2] as ModuleName,
      rank,
      scaling: cfg.useRslora ? alpha / Math.sqrt(rank) : alpha / rank,
      name,
    });
  }
  if (out.length === 0) throw cfgErr(`target_modules ${JSON.stringify(targets)} match no module of the base model`);
  return out;
}

/** Resolves which modules the adapter adapts, with rank and scaling, or refuses it. */
export function resolveAdapterModules(cfg: PeftLoraConfig, model: ModelConfig, opts: ResolveOptions): ResolvedModule[] {
  const steps = resolveSteps(cfg, model, opts);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

export interface AsyncResolveOptions extends ResolveOptions {
  /** Longest the event loop is held at once (ms, default 5). */
  sliceMs?: number;
  /** Most time matching may take in all before the adapter is refused (ms, default 2000). */
  budgetMs?: number;
  /** Clock in ms (tests drive it). */
  now?: () => number;
}

/**
 * resolveAdapterModules for servers: gives the event loop back every `sliceMs`, so the patterns of
 * an uploaded config never stall other requests, and refuses an adapter whose patterns need more
 * than `budgetMs` of matching in all (RE2 keeps each match linear, but a long pattern times many
 * module names can still add up).
 */
export async function resolveAdapterModulesAsync(
  cfg: PeftLoraConfig,
  model: ModelConfig,
  opts: AsyncResolveOptions,
): Promise<ResolvedModule[]> {
  const now = opts.now ?? (() => performance.now());
  const sliceMs = opts.sliceMs ?? 5;
  const budgetMs = opts.budgetMs ?? 2000;
  const steps = resolveSteps(cfg, model, opts);
  let spent = 0;
  for (;;) {
    const sliceStart = now();
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
      const inSlice = now() - sliceStart;
      if (spent + inSlice > budgetMs) {
        throw unsupported(
          `matching the adapter's target_modules / layers_pattern / rank_pattern / alpha_pattern against the base model's modules takes more than ${budgetMs} ms; use simpler patterns`,
        );
      }
      if (inSlice >= sliceMs) {
        spent += inSlice;
        break;
      }
    }
    await new Promise<void>((res) => setImmediate(res));
  }
}
