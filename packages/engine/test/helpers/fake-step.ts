// A fake engine step for scheduler unit tests: token = f(last token of the item, adapter slot),
// never 0 (the fake EOS), every step recorded with copies of its block tables.
import { resolveSampling, type ResolvedSampling, type StepItem, type StepItemResult } from '../../src/index.js';

export interface RecordedStep {
  items: StepItem[];
  tables: number[][];
}

export function fakeStep(): { steps: RecordedStep[]; runStep: (items: StepItem[]) => Promise<StepItemResult[]> } {
  const steps: RecordedStep[] = [];
  return {
    steps,
    runStep: async (items) => {
      steps.push({ items, tables: items.map((it) => Array.from(it.blockTable)) });
      return items.map((it) =>
        it.sample ? { token: 1 + ((it.tokens[it.tokens.length - 1]! * 7 + it.adapterSlot + 3) % 63), logprob: -1 } : {},
      );
    },
  };
}

export const greedy = (maxTokens: number): ResolvedSampling => resolveSampling({ maxTokens, temperature: 0 }, 64);

export { ManualClock } from '@loraplex/common';
