// Per-request sampling parameters: defaults, validation, and the per-segment arrays the step takes.
import { EngineError } from './errors.js';

export interface SamplingOptions {
  maxTokens?: number;
  /** 0 = greedy. Default 1. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  seed?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  stopTokenIds?: number[];
  ignoreEos?: boolean;
  /** Return the chosen token's log-probability and this many top alternatives (0-20). */
  logprobs?: number;
}

export interface ResolvedSampling {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  seed: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  stopTokenIds: number[];
  ignoreEos: boolean;
  logprobs: number | undefined;
}

function check(ok: boolean, msg: string): void {
  if (!ok) throw new EngineError('INVALID_ARGUMENT', `sampling: ${msg}`);
}

export function resolveSampling(s: SamplingOptions | undefined, vocab: number): ResolvedSampling {
  const o = s ?? {};
  const num = (v: unknown, d: number): number => (v === undefined ? d : (v as number));
  const r: ResolvedSampling = {
    maxTokens: num(o.maxTokens, 16),
    temperature: num(o.temperature, 1),
    topK: num(o.topK, 0),
    topP: num(o.topP, 1),
    minP: num(o.minP, 0),
    seed: o.seed ?? Math.floor(Math.random() * 2 ** 48),
    repetitionPenalty: num(o.repetitionPenalty, 1),
    presencePenalty: num(o.presencePenalty, 0),
    frequencyPenalty: num(o.frequencyPenalty, 0),
    stopTokenIds: o.stopTokenIds ?? [],
    ignoreEos: o.ignoreEos ?? false,
    logprobs: o.logprobs,
  };
  check(
    Number.isInteger(r.maxTokens) && r.maxTokens >= 0,
    `maxTokens must be a non-negative integer, got ${String(o.maxTokens)}`,
  );
  check(
    typeof r.temperature === 'number' && r.temperature >= 0 && Number.isFinite(r.temperature),
    'temperature must be >= 0',
  );
  check(Number.isInteger(r.topK) && r.topK >= 0, 'topK must be a non-negative integer (0 = off)');
  check(typeof r.topP === 'number' && r.topP > 0 && r.topP <= 1, 'topP must be in (0, 1]');
  check(typeof r.minP === 'number' && r.minP >= 0 && r.minP <= 1, 'minP must be in [0, 1]');
  check(Number.isSafeInteger(r.seed) && r.seed >= 0, 'seed must be a non-negative integer');
  check(
    typeof r.repetitionPenalty === 'number' && r.repetitionPenalty > 0 && Number.isFinite(r.repetitionPenalty),
    'repetitionPenalty must be > 0',
  );
  check(
    typeof r.presencePenalty === 'number' && Math.abs(r.presencePenalty) <= 2,
    'presencePenalty must be in [-2, 2]',
  );
  check(
    typeof r.frequencyPenalty === 'number' && Math.abs(r.frequencyPenalty) <= 2,
    'frequencyPenalty must be in [-2, 2]',
  );
  check(
    Array.isArray(r.stopTokenIds) && r.stopTokenIds.every((t) => Number.isInteger(t) && t >= 0 && t < vocab),
    'stopTokenIds must be token ids of the vocabulary',
  );
  check(typeof r.ignoreEos === 'boolean', 'ignoreEos must be a boolean');
  check(
    r.logprobs === undefined || (Number.isInteger(r.logprobs) && r.logprobs >= 0 && r.logprobs <= 20),
    'logprobs must be an integer in [0, 20]',
  );
  return r;
}

export function usesPenalties(s: ResolvedSampling): boolean {
  return s.repetitionPenalty !== 1 || s.presencePenalty !== 0 || s.frequencyPenalty !== 0;
}
