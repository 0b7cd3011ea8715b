// Seeded random JSON schemas for JSON-mode tests: objects with required string / integer / number /
// boolean / enum / array fields and nested objects, every output bounded in length (a random-weight
// model only ends a string or a number when the grammar forces it to).

import { mulberry32 as rng } from '../../../../packages/engine/test/helpers/gen-model.js';

type Schema = Record<string, unknown>;

const WORDS = ['red', 'green', 'blue', 'cat', 'dog', 'x', 'yes', 'no', 'alpha', 'beta'];

export function randomSchema(seed: number): Schema {
  const r = rng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)]!;
  const leaf = (): Schema => {
    switch (int(0, 5)) {
      case 0: {
        const max = int(0, 6);
        return { type: 'string', minLength: int(0, Math.min(2, max)), maxLength: max };
      }
      case 1: {
        const lo = int(-100, 50);
        return { type: 'integer', minimum: lo, maximum: lo + int(0, 500) };
      }
      case 2: {
        const lo = int(-10, 10);
        return { type: 'number', minimum: lo, maximum: lo + int(1, 100) };
      }
      case 3:
        return { type: 'boolean' };
      case 4:
        return { enum: [...new Set(Array.from({ length: int(1, 4) }, () => pick(WORDS)))] };
      default:
        return { type: 'string', enum: [...new Set(Array.from({ length: int(1, 3) }, () => pick(WORDS)))] };
    }
  };
  const value = (depth: number): Schema => {
    const k = int(0, 9);
    if (k < 6 || depth >= 2) return leaf();
    if (k < 8) {
      const max = int(0, 3);
      return { type: 'array', items: leaf(), minItems: int(0, max), maxItems: max };
    }
    return object(depth + 1);
  };
  const object = (depth: number): Schema => {
    const n = int(1, depth === 0 ? 4 : 2);
    const properties: Record<string, Schema> = {};
    for (let i = 0; i < n; i++) properties[`${pick(WORDS)}_${i}`] = value(depth);
    return { type: 'object', properties, required: Object.keys(properties), additionalProperties: false };
  };
  return object(0);
}
