// response_format in request bodies (JSON mode). OpenAI routes (as vLLM and LoRAX's OpenAI routes):
// {type: 'text'} (plain text), {type: 'json_object'} (any JSON object; LoRAX's optional `schema`
// too), {type: 'json_schema', json_schema: {name, schema, description?, strict?}} (`strict` is
// always in effect: the output follows the schema exactly). LoRAX /generate: {type: 'json_object',
// schema?} (no schema = any JSON object). A schema may be an object or a JSON string of one.
import { z } from 'zod';

const schemaValue = z.union([z.record(z.string(), z.unknown()), z.string()]).nullish();

export const openAiResponseFormat = z
  .discriminatedUnion(
    'type',
    [
      z.strictObject({ type: z.literal('text') }),
      z.strictObject({ type: z.literal('json_object'), schema: schemaValue }),
      z.strictObject({
        type: z.literal('json_schema'),
        json_schema: z.strictObject({
          name: z.string().max(64).nullish(),
          description: z.string().nullish(),
          schema: schemaValue,
          strict: z.boolean().nullish(),
        }),
      }),
    ],
    { error: "response_format.type must be 'text', 'json_object' or 'json_schema'" },
  )
  .nullish();
export type OpenAiResponseFormat = z.infer<typeof openAiResponseFormat>;

export const loraxResponseFormat = z
  .strictObject({
    type: z.literal('json_object', { error: "response_format.type must be 'json_object'" }),
    schema: schemaValue,
  })
  .nullish();
export type LoraxResponseFormat = z.infer<typeof loraxResponseFormat>;

/** JSON mode requested: the schema (undefined = any JSON object) and the field to name in errors. */
export interface RequestedFormat {
  schema: unknown;
  /** The body field holding the schema, e.g. 'response_format.json_schema.schema'. */
  param: string;
}

export function requestedFormat(
  f: OpenAiResponseFormat | LoraxResponseFormat,
  prefix = 'response_format',
): RequestedFormat | undefined {
  if (!f || f.type === 'text') return undefined;
  if (f.type === 'json_schema')
    return { schema: f.json_schema.schema ?? undefined, param: `${prefix}.json_schema.schema` };
  return { schema: f.schema ?? undefined, param: `${prefix}.schema` };
}
