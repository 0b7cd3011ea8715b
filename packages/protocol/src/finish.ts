// Finish reasons as they appear on the wire. The engine and the scheduler have their own internal
// reason ('eos' | 'stop' | 'length'); these are what clients read.
import { z } from 'zod';

/** OpenAI `choices[].finish_reason`. */
export const openAiFinishReason = z.enum(['stop', 'length']);
export type OpenAiFinishReason = z.infer<typeof openAiFinishReason>;

/** LoRAX (text-generation-inference) `details.finish_reason`. */
export const loraxFinishReason = z.enum(['length', 'eos_token', 'stop_sequence']);
export type LoraxFinishReason = z.infer<typeof loraxFinishReason>;
