// A failure in the grammar engine thread (xgrammar's WebAssembly instance) fails only the request
// that caused it: the thread is replaced, the next compile works, and sequences that were decoding
// on the old thread carry on — their matcher is rebuilt on the new one from the tokens they accepted.
// The trap is real: with the depth limit raised past what xgrammar survives, a 100-deep schema
// overruns its C++ stack and corrupts its memory ("memory access out of bounds"), as it did before
// the limits. The thread deaths are real too: ended mid-request, or past the compile time limit.
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { SCHEMA_LIMITS } from '../src/structured/schema-limits.js';
import { InvalidSchemaError, StructuredOutput } from '../src/structured/structured-output.js';
import type { GrammarConstraint } from '../src/structured/constraint.js';
import { readVocabInfo } from '../src/structured/tokenizer-info.js';
import { modelDir } from './helpers/http.js';
import { nested, SLOW } from './helpers/pathological-schemas.js';

const dir = modelDir('llama');
const VOCAB = 512,
  EOS = 2;
const SCHEMA = {
  type: 'object',
  properties: { ok: { type: 'boolean' }, n: { type: 'integer', minimum: 0, maximum: 9 } },
  required: ['ok', 'n'],
  additionalProperties: false,
};

/** The lowest allowed token that is not EOS (EOS when it is the only one). */
function pick(mask: Uint32Array): number {
  let first = -1;
  for (let t = 0; t < VOCAB; t++) {
    if (!((mask[t >>> 5]! >>> (t & 31)) & 1)) continue;
    if (t !== EOS) return t;
    first = t;
  }
  return first;
}

/** Drives `c` for up to `steps` tokens (to the end of the grammar if sooner); returns the tokens. */
async function drive(c: GrammarConstraint, steps: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < steps && !c.complete; i++) {
    const t = pick(await c.nextMask());
    if (t === EOS) break;
    expect(c.accept(t)).toBe(true);
    out.push(t);
  }
  return out;
}

async function text(tokens: number[]): Promise<string> {
  const { tokenBytes } = await readVocabInfo(dir, VOCAB);
  return Buffer.concat(tokens.map((t) => tokenBytes[t]!)).toString('utf8');
}

describe('grammar engine isolation', () => {
  it('a compile that traps is a 400 for its request only; decoding sequences move to the new engine', async () => {
    const so = new StructuredOutput({
      modelDir: dir,
      vocab: VOCAB,
      stopTokenIds: [EOS],
      limits: { ...SCHEMA_LIMITS, depth: 1000 },
    });
    const before = await so.constraint(await so.compile({ schema: SCHEMA }));
    const head = await drive(before, 3); // part-way through its output on the first engine
    expect(head).toHaveLength(3);

    const trap = so.compile({ schema: nested(100) });
    await expect(trap).rejects.toThrow(InvalidSchemaError);
    await expect(trap).rejects.toThrow(/grammar compiler failed on this schema \(memory access out of bounds\)/);
    expect(so.enginesReplaced).toBe(1);

    // A new request compiles on a fresh engine and its output follows the schema.
    const after = await so.constraint(await so.compile({ schema: SCHEMA }));
    const fresh = await drive(after, 50);
    expect(after.complete).toBe(true);
    const validate = new Ajv().compile(SCHEMA);
    expect(validate(JSON.parse(await text(fresh)))).toBe(true);

    // The sequence that was decoding carries on where it stood (its tokens replayed on the new engine).
    const tail = await drive(before, 50);
    expect(before.complete).toBe(true);
    expect(validate(JSON.parse(await text([...head, ...tail])))).toBe(true);
    expect(so.enginesReplaced).toBe(1);
    before.dispose();
    after.dispose();
    await so.close();
  });

  it('an engine thread that dies with masks in flight: every sequence moves to a fresh engine and completes', async () => {
    const so = new StructuredOutput({ modelDir: dir, vocab: VOCAB, stopTokenIds: [EOS] });
    const compiled = await so.compile({ schema: SCHEMA });
    const seqs = [await so.constraint(compiled), await so.constraint(compiled), await so.constraint(compiled)];
    const heads = await Promise.all(seqs.map((c, i) => drive(c, 1 + i)));
    // Masks requested, then the thread is ended before it answers them (as a crash would).
    const inFlight = seqs.map((c) => c.nextMask());
    await compiled.engine.close();
    const masks = await Promise.all(inFlight); // answered by the fresh engine, after replaying each output
    expect(so.enginesReplaced).toBe(1);
    const validate = new Ajv().compile(SCHEMA);
    for (const [i, c] of seqs.entries()) {
      const t = pick(masks[i]!);
      expect(c.accept(t)).toBe(true);
      const tail = await drive(c, 50);
      expect(c.complete).toBe(true);
      expect(validate(JSON.parse(await text([...heads[i]!, t, ...tail])))).toBe(true);
      c.dispose();
    }
    await so.close();
  });

  it('a compile past the time limit ends the engine: a 400 naming the limit, refused again at once; the next compile works', async () => {
    const so = new StructuredOutput({ modelDir: dir, vocab: VOCAB, stopTokenIds: [EOS] });
    const warm = await so.constraint(await so.compile({ schema: SCHEMA }));
    const head = await drive(warm, 2);
    so.engineLimits.compileMs = 20;
    await expect(so.compile({ schema: SLOW })).rejects.toThrow(
      /too complex for the grammar compiler: compiling took longer than the 20 ms limit/,
    );
    expect(so.enginesReplaced).toBe(1);
    await expect(so.compile({ schema: SLOW })).rejects.toThrow(/took longer than the 20 ms limit/); // not compiled again
    expect(so.enginesReplaced).toBe(1);
    so.engineLimits.compileMs = 60_000;
    const validate = new Ajv().compile(SCHEMA);
    const next = await so.constraint(await so.compile({ schema: SCHEMA }));
    expect(validate(JSON.parse(await text(await drive(next, 50))))).toBe(true);
    expect(validate(JSON.parse(await text([...head, ...(await drive(warm, 50))])))).toBe(true);
    warm.dispose();
    next.dispose();
    await so.close();
  });
});
