// Field schemas shared by the OpenAI and LoRAX request bodies.
import { z } from 'zod';

/**
 * A field the worker does not implement but whose value can be the neutral default (clients such as
 * lorax-client send every field, mostly null): accepts null/undefined or exactly `neutral`, and
 * rejects anything else as unsupported.
 */
export function neutralOnly<T extends string | number | boolean>(name: string, neutral: T) {
  return z.literal(neutral, { error: `${name} is not supported (only ${JSON.stringify(neutral)} or null)` }).nullish();
}

export const nullOnly = (name: string) => z.null({ error: `${name} is not supported (only null)` }).optional();

export const seedSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
