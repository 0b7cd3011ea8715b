// zod issues as one 400 message naming the fields, and the first field (OpenAI's `param`): the
// worker's parseBody and the API's check of the body it forwards word them alike.
import type { z } from 'zod';

export function describeIssues(issues: z.core.$ZodIssue[]): { message: string; param: string | null } {
  const first = issues[0]!;
  const where = (path: PropertyKey[]): string => (path.length > 0 ? path.map(String).join('.') : 'body');
  const message = issues
    .slice(0, 5)
    .map((i) =>
      i.code === 'unrecognized_keys'
        ? `${where(i.path)}: unknown or unsupported field(s) ${i.keys.map((k) => `'${k}'`).join(', ')}`
        : `${where(i.path)}: ${i.message}`,
    )
    .join('; ');
  const param =
    first.code === 'unrecognized_keys'
      ? [...first.path, first.keys[0]!].map(String).join('.')
      : first.path.map(String).join('.') || null;
  return { message, param };
}
