// vLLM's conventions beyond the OpenAI API:
// - POST /tokenize {prompt | messages} -> {count, max_model_len, tokens} and POST /detokenize {tokens} -> {prompt}.
//   LoRAX has a POST /tokenize too, with {inputs}: the body's shape picks which (tokenizeEither).
// - POST /v1/load_lora_adapter {lora_name, lora_path} and /v1/unload_lora_adapter {lora_name}, with vLLM's
//   plain-text answers. Only on a standalone worker started with --allow-runtime-lora-updating (or
//   VLLM_ALLOW_RUNTIME_LORA_UPDATING=true); otherwise 404, as vLLM answers when the routes are off. In
//   platform mode (a worker secret) they are always off: the platform registers adapters by signed
//   descriptors. The rule for paths: lora_path (relative = from --adapter-dir) must lie inside --adapter-dir,
//   unless --allow-lora-paths-outside-adapter-dir; without --adapter-dir only that flag allows a load.
import { resolve, sep } from 'node:path';
import type { Context } from 'hono';
import {
  loadLoraAdapterRequest,
  unloadLoraAdapterRequest,
  vllmDetokenizeRequest,
  vllmTokenizeRequest,
  type VllmTokenizeResponse,
} from '@loraplex/protocol';
import { localAdapterAt, isValidAdapterName } from '../../adapters/source.js';
import { parseBody, refuseOversizedText, resolveModel } from '../../validation/common.js';
import type { WorkerContext } from '../../worker-context.js';
import { ApiError, badRequest, notFound } from '../errors.js';
import type { WorkerEnv } from '../types.js';
import { chatPrompt } from './chat.js';
import { loraxTokenize } from './lorax-info.js';

/** POST /tokenize: LoRAX's when the body has `inputs`, else vLLM's. */
export function tokenizeEither(ctx: WorkerContext) {
  const lorax = loraxTokenize(ctx);
  const vllm = vllmTokenize(ctx);
  return function tokenizeHandler(c: Context<WorkerEnv>): Promise<Response> {
    const body = c.get('body') as Record<string, unknown>;
    return 'inputs' in body ? lorax(c) : vllm(c);
  };
}

export function vllmTokenize(ctx: WorkerContext) {
  return async function vllmTokenizeHandler(c: Context<WorkerEnv>): Promise<Response> {
    const body = parseBody(vllmTokenizeRequest, c.get('body'));
    const model = await resolveModel(ctx, body.model);
    const tk = ctx.engine.tokenizer!;
    let tokens: number[];
    if ('prompt' in body) {
      refuseOversizedText(ctx, body.prompt.length, 'prompt');
      tokens = await tk.encode(body.prompt, body.add_special_tokens ?? true);
    } else {
      if (body.add_special_tokens === true || body.add_generation_prompt === false)
        throw badRequest(
          'messages are tokenized as chat completions do: add_special_tokens false, generation prompt on',
        );
      tokens = await chatPrompt(ctx, body.messages, model.chatTemplate);
    }
    const out: VllmTokenizeResponse = { count: tokens.length, max_model_len: ctx.engine.config.maxPositions, tokens };
    return c.json(out);
  };
}

export function vllmDetokenize(ctx: WorkerContext) {
  return async function vllmDetokenizeHandler(c: Context<WorkerEnv>): Promise<Response> {
    const body = parseBody(vllmDetokenizeRequest, c.get('body'));
    await resolveModel(ctx, body.model);
    const vocab = ctx.engine.config.vocab;
    for (const t of body.tokens)
      if (t >= vocab) throw badRequest(`token id ${t} is outside the vocabulary of ${vocab} tokens`, 'tokens');
    return c.json({ prompt: await ctx.engine.tokenizer!.decode(body.tokens, false) });
  };
}

type RuntimeRules = NonNullable<WorkerContext['runtimeLoraUpdating']>;

function runtimeUpdating(ctx: WorkerContext, c: Context<WorkerEnv>): RuntimeRules {
  const r = ctx.runtimeLoraUpdating;
  if (!r?.allowed) throw notFound(`no route ${c.req.method} ${c.req.path}`);
  return r;
}

const vllmBadRequest = (message: string): ApiError => new ApiError(400, 'BadRequestError', message);
const vllmNotFound = (message: string): ApiError => new ApiError(404, 'NotFoundError', message);

/**
 * Where a load's lora_path points: a relative path is taken from --adapter-dir (else the working directory).
 * Inside means inside lexically (after resolving '..'): the directory's own symlinks are the operator's.
 */
function placeOf(rules: RuntimeRules, path: string): { path: string; inside: boolean } {
  const abs = rules.adapterDir !== undefined ? resolve(rules.adapterDir, path) : resolve(path);
  const dir = rules.adapterDir !== undefined ? resolve(rules.adapterDir) : undefined;
  return { path: abs, inside: dir !== undefined && abs.startsWith(dir.endsWith(sep) ? dir : dir + sep) };
}

export function loadLoraAdapter(ctx: WorkerContext) {
  return async function loadLoraHandler(c: Context<WorkerEnv>): Promise<Response> {
    const rules = runtimeUpdating(ctx, c);
    const { lora_name: name, lora_path: path } = parseBody(loadLoraAdapterRequest, c.get('body'));
    if (!name || !path) throw vllmBadRequest("Both 'lora_name' and 'lora_path' must be provided.");
    if (!isValidAdapterName(name) || name === ctx.modelId)
      throw vllmBadRequest(
        `'${name}' is not a valid adapter name (letters, digits, '.', '_', '-'; not the base model)`,
      );
    if ((await ctx.adapters.lookup(name)) !== undefined)
      throw vllmBadRequest(`The lora adapter '${name}' has already been loaded.`);
    const place = placeOf(rules, path);
    if (!rules.anyPath && !place.inside)
      throw vllmBadRequest(
        `Loading lora ${name} failed: ${path} is not inside the adapter directory` +
          (rules.adapterDir ? ` ${rules.adapterDir}` : ' (the worker has no --adapter-dir)') +
          '; start the worker with --allow-lora-paths-outside-adapter-dir to allow any path',
      );
    const at = await localAdapterAt(name, place.path);
    if (!at) throw vllmNotFound(`Loading lora ${name} failed: No adapter found for ${path}`);
    // A resident copy under this name (an earlier load, unloaded while in use) must go before new weights come.
    if (await ctx.adapters.forget(name))
      throw vllmBadRequest(`Loading lora ${name} failed: an earlier adapter of that name is still in use; retry`);
    ctx.namedAdapters!.add(at);
    return c.text(`Success: LoRA adapter '${name}' added successfully.`);
  };
}

export function unloadLoraAdapter(ctx: WorkerContext) {
  return async function unloadLoraHandler(c: Context<WorkerEnv>): Promise<Response> {
    runtimeUpdating(ctx, c);
    const { lora_name: name } = parseBody(unloadLoraAdapterRequest, c.get('body'));
    if (!name) throw vllmBadRequest("'lora_name' needs to be provided to unload a LoRA adapter.");
    if (!ctx.namedAdapters!.remove(name)) {
      if ((await ctx.adapters.lookup(name)) !== undefined)
        throw vllmBadRequest(
          `The lora adapter '${name}' is served from the adapter directory: remove its directory instead.`,
        );
      throw vllmNotFound(`The lora adapter '${name}' cannot be found.`);
    }
    await ctx.adapters.forget(name);
    return c.text(`Success: LoRA adapter '${name}' removed successfully.`);
  };
}
