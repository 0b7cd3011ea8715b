// The scheduler's decisions between two steps, as pure functions over its state (unit-tested alone):
//   - admission: round-robin across adapter queues, only for admissible adapters, while the free
//     KV blocks (less those that admitted prefills still need) hold the sequence's prefill plus a
//     watermark of 1% of the cache (vLLM's default), and the running set stays under maxRunning;
//   - decode blocks: every decoding sequence gets the block its next token needs; when none is
//     free the most recently admitted running sequence is preempted by recompute (vLLM's default).
//     The oldest running sequence is never a victim while others run, and a request whose whole
//     length cannot fit the cache is refused at submit, so the running set always progresses.
import type { BlockAllocator } from '../kv-cache.js';
import type { AdapterGate } from './gate.js';
import { BASE_KEY, type AdapterQueues } from './queue.js';
import type { FinishReason, ScheduledSequence } from './sequence.js';

/** Blocks kept free at admission while sequences run, headroom for their decode tokens (vLLM: 1%). */
export function watermarkBlocks(numBlocks: number): number {
  return Math.floor(0.01 * numBlocks);
}

/** KV blocks that admitted sequences still need to finish their prefill, beyond what they hold. */
export function outstandingPrefill(
  running: readonly ScheduledSequence[],
  kv: Pick<BlockAllocator, 'blocksFor'>,
): number {
  let n = 0;
  for (const s of running)
    if (s.generating && !s.prefilled) n += Math.max(0, kv.blocksFor(s.prefillLength) - s.blocks.length);
  return n;
}

export interface AdmissionInput<S extends ScheduledSequence> {
  queues: AdapterQueues<S>;
  running: readonly S[];
  kv: Pick<BlockAllocator, 'blocksFor' | 'freeBlocks'>;
  gate: Pick<AdapterGate, 'admissible'>;
  maxRunning: number;
  watermark: number;
}

/**
 * Takes from the queues, in admission order, the sequences to admit now. Head-of-line: if the
 * chosen queue's head does not fit, nobody is admitted past it (large requests are not starved).
 * The watermark does not apply to an empty running set (anything submitted fits alone).
 */
export function chooseAdmissions<S extends ScheduledSequence>(a: AdmissionInput<S>): S[] {
  const admitted: S[] = [];
  let free = a.kv.freeBlocks - outstandingPrefill(a.running, a.kv);
  const eligible = (key: string): boolean => key === BASE_KEY || a.gate.admissible(key);
  while (a.running.length + admitted.length < a.maxRunning) {
    const next = a.queues.next(eligible);
    if (!next) break;
    const need = a.kv.blocksFor(next.head.prefillLength);
    if (need > free - (a.running.length + admitted.length > 0 ? a.watermark : 0)) break;
    admitted.push(a.queues.take(next.key));
    free -= need;
  }
  return admitted;
}

/**
 * Gives every decoding sequence the block its next token needs. When none is free, preempts the
 * most recently admitted running sequence (possibly the one that needs the block) and tries again:
 * sequences are visited in admission order and victims taken from the end, so a victim has not
 * been given a block yet in this pass. `preempt` must remove the victim from `running`.
 */
export function secureDecodeBlocks<S extends ScheduledSequence>(
  running: S[],
  kv: Pick<BlockAllocator, 'blocksFor' | 'freeBlocks' | 'ensure'>,
  preempt: (victim: S) => void,
): void {
  for (let i = 0; i < running.length;) {
    const s = running[i]!;
    if (s.generating && s.prefilled) {
      if (kv.blocksFor(s.computed + 1) - s.blocks.length > kv.freeBlocks) {
        preempt(running[running.length - 1]!);
        continue; // re-check s, unless it was the victim (then i is past the end)
      }
      kv.ensure(s.blocks, s.computed + 1);
    }
    i++;
  }
}

/** The token-level finish of a sequence that just sampled `token` (its sampled list not yet grown). */
export function tokenFinish(
  s: ScheduledSequence,
  token: number,
  eos: ReadonlySet<number>,
  maxPositions: number,
): FinishReason | undefined {
  const p = s.sampling;
  if (!p.ignoreEos && eos.has(token)) return 'eos';
  if (p.stopTokenIds.includes(token)) return 'stop';
  const n = s.sampled.length + 1;
  if (n >= p.maxTokens) return 'length';
  if (s.prompt.length + n >= maxPositions) return 'length';
  return undefined;
}
