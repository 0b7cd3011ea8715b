// JSON mode for a request's sequences: compile the requested format once (cached per schema), give
// every sequence its own grammar state, and turn an unusable schema into a 400 naming the field.
import type { Context } from 'hono';
import type { Sequence, SequenceParams } from '../../scheduler/sequence.js';
import { InvalidSchemaError } from '../../structured/structured-output.js';
import type { RequestedFormat } from '@loraplex/protocol';
import type { WorkerContext } from '../../worker-context.js';
import { badRequest } from '../errors.js';
import { submitAll } from '../generation.js';

function parseSchema(format: RequestedFormat): unknown {
  if (typeof format.schema !== 'string') return format.schema;
  try {
    return JSON.parse(format.schema) as unknown;
  } catch (e) {
    throw badRequest(`${format.param}: the schema string is not JSON: ${(e as Error).message}`, format.param);
  }
}

/** Attaches one constraint per sequence (params are changed in place); no-op without a format. */
export async function attachConstraints(
  ctx: WorkerContext,
  params: SequenceParams[],
  format: RequestedFormat | undefined,
): Promise<void> {
  if (!format) return;
  let grammar;
  try {
    grammar = await ctx.structured.compile({ schema: parseSchema(format) });
  } catch (e) {
    if (e instanceof InvalidSchemaError) throw badRequest(`${format.param}: ${e.message}`, format.param);
    throw e;
  }
  const constraints = await Promise.all(params.map(() => ctx.structured.constraint(grammar)));
  params.forEach((p, i) => (p.constraint = constraints[i]!));
}

/** submitAll, freeing the grammar states of sequences that were never queued when it throws. */
export function submitConstrained(ctx: WorkerContext, c: Context, params: SequenceParams[]): Sequence[] {
  try {
    return submitAll(ctx, c, params);
  } catch (e) {
    for (const p of params) p.constraint?.dispose();
    throw e;
  }
}
