// JSON mode for one worker: turns a response format (any JSON object, or a JSON schema) into a
// compiled xgrammar grammar (cached), and a compiled grammar into one GrammarConstraint per sequence.
// Everything is set up on the first JSON-mode request (the vocabulary pass costs time for a large
// tokenizer; a worker that never sees JSON mode never pays it).
//
// Output format: the model's own. Whitespace between JSON tokens is free (compact, spaced or pretty-printed, as
// the model writes it) but bounded per gap, so a model cannot pad forever (json-whitespace.ts).
//
// Isolation: xgrammar (synchronous WebAssembly) runs in a grammar engine thread (engine-thread.ts)
// that owns its compiled grammars and matchers; the event loop only sends requests and gets masks.
// A schema reaches the compiler only after schema-limits.ts passed it (bounded depth and size,
// nothing it cannot honour); the compile then runs under a time limit, and the engine under a
// WebAssembly memory and a JS heap limit (engine-client.ts). A request that traps, runs past a limit
// or crashes the thread fails alone (a compile with a 400 naming the limit, a sequence with a 500):
// the thread is ended, the next request starts a fresh one, and every other sequence moves to it at
// its next mask (its grammar compiled again, its accepted tokens replayed: constraint.ts).
import { Lru } from '@loraplex/common';
import { GrammarConstraint, type EngineMatcher } from './constraint.js';
import {
  ENGINE_LIMITS,
  EngineDiedError,
  EngineRequestError,
  EngineThread,
  newId,
  type EngineLimits,
} from './engine-client.js';
import { GrammarCache } from './grammar-cache.js';
import { checkSchemaLimits, InvalidSchemaError, SCHEMA_LIMITS, type SchemaLimits } from './schema-limits.js';
import { workAroundXgrammar } from './schema-workarounds.js';
import { readVocabInfo, type VocabInfo } from './tokenizer-info.js';

/** A response format: `schema` undefined means any JSON object. */
export interface JsonFormat {
  schema?: unknown;
}

export { InvalidSchemaError };

const ANY_OBJECT = '{"type":"object"}';
/** Formats whose compile ended an engine (trap, limit, crash), refused at once from then on. */
const REFUSED_KEPT = 256;

export interface StructuredOutputOptions {
  modelDir: string;
  /** The model's logit width. */
  vocab: number;
  /** Tokens that end generation (EOS): allowed where the grammar may end. */
  stopTokenIds: number[];
  /** Compiled grammars kept. Default 64. */
  cacheSize?: number;
  /** What a schema may hold (schema-limits.ts). Default SCHEMA_LIMITS. */
  limits?: SchemaLimits;
  /** Time and memory limits of the grammar engine. Default ENGINE_LIMITS. */
  engineLimits?: Partial<EngineLimits>;
}

/** One grammar engine thread and the grammars compiled in it, by format key. */
interface Engine {
  thread: EngineThread;
  cache: GrammarCache;
}

/** A compiled format: its grammar, the engine it lives in, and the key to compile it again elsewhere. */
export interface CompiledFormat {
  grammarId: number;
  engine: EngineThread;
  key: string;
  format: JsonFormat;
}

const formatKey = (format: JsonFormat): string =>
  format.schema === undefined ? `object:` : `schema:${JSON.stringify(format.schema)}`;

export class StructuredOutput {
  private current: Promise<Engine> | undefined;
  /** The current engine's thread, once started. */
  private thread: EngineThread | undefined;
  private vocabInfo: Promise<VocabInfo> | undefined;
  /** Grammar engines replaced after a trap, an exceeded limit or a crash. */
  enginesReplaced = 0;
  private hits = 0;
  private misses = 0;
  private size = 0;
  /** Oldest first out: reads peek, so a refused format's recency is when it was refused. */
  private readonly refused = new Lru<string, InvalidSchemaError>({ maxEntries: REFUSED_KEPT });
  /** The engine's limits (engine-client.ts); changes apply to the next request. */
  readonly engineLimits: EngineLimits;
  /** What a schema may hold (schema-limits.ts); changes apply to the next compile. */
  schemaLimits: SchemaLimits;
  private closed = false;
  readonly words: number;

  constructor(private readonly opts: StructuredOutputOptions) {
    this.words = Math.ceil(opts.vocab / 32);
    this.engineLimits = { ...ENGINE_LIMITS, ...opts.engineLimits };
    this.schemaLimits = opts.limits ?? SCHEMA_LIMITS;
  }

  /** A compile is running in the engine thread now. */
  get compiling(): boolean {
    return this.thread?.compiling ?? false;
  }

  get cacheStats(): { size: number; hits: number; misses: number } {
    return { size: this.size, hits: this.hits, misses: this.misses };
  }

  /** The current engine, starting one (the first, or after the last one ended). */
  private engine(): Promise<Engine> {
    if (this.closed) return Promise.reject(new Error('JSON mode is shut down'));
    const started = (this.current ??= (async () => {
      const info = await (this.vocabInfo ??= readVocabInfo(this.opts.modelDir, this.opts.vocab));
      const thread = new EngineThread(
        {
          encodedVocab: info.encodedVocab,
          tokenBytes: info.tokenBytes,
          vocabType: info.vocabType,
          prependSpace: info.prependSpace,
          vocab: this.opts.vocab,
          stopTokenIds: this.opts.stopTokenIds,
        },
        this.engineLimits,
        (dead) => this.replaced(dead),
      );
      await thread.ready;
      this.thread = thread;
      this.size = 0;
      return {
        thread,
        cache: new GrammarCache(this.opts.cacheSize ?? 64, (grammarId) =>
          thread.post({ op: 'disposeGrammar', target: grammarId }),
        ),
      };
    })());
    started.catch(() => {
      if (this.current === started) this.current = undefined;
    });
    return started;
  }

  private replaced(dead: EngineThread): void {
    if (!this.closed) this.enginesReplaced++;
    const current = this.current;
    void current?.then(
      (e) => {
        if (e.thread === dead && this.current === current) this.current = undefined;
      },
      () => undefined,
    );
  }

  /** Validates and compiles a format (cached). Throws InvalidSchemaError for an unusable schema. */
  async compile(format: JsonFormat): Promise<CompiledFormat> {
    return this.compileOn(format, formatKey(format), true);
  }

  private async compileOn(format: JsonFormat, key: string, check: boolean): Promise<CompiledFormat> {
    for (let attempt = 0; ; attempt++) {
      const refused = this.refused.peek(key);
      if (refused) {
        this.hits++;
        throw refused;
      }
      const { thread, cache } = await this.engine();
      const before = cache.misses;
      const p = cache.get(key, () =>
        this.compileIn(
          thread,
          format,
          key,
          check && format.schema !== undefined ? this.checkSchema(format.schema) : undefined,
        ),
      );
      if (cache.misses === before) this.hits++;
      else this.misses++;
      this.size = cache.size;
      try {
        return { grammarId: await p, engine: thread, key, format };
      } catch (e) {
        // Another request ended the engine while this compile waited: compile again on the new one.
        if (!(e instanceof EngineDiedError) || attempt >= 2) throw e;
      }
    }
  }

  /** The cheap checks, on this thread; ajv's (slow for a large schema) runs in the engine thread. Returns what ajv checks. */
  private checkSchema(schema: unknown): object {
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema))
      throw new InvalidSchemaError('the schema must be a JSON object');
    // ajv knows draft-07 by default; `$schema` naming another draft is no reason to refuse.
    const { $schema: _ignored, ...rest } = schema as Record<string, unknown>;
    // The limits first: they are cheap and bound what ajv then walks (and compiles to code).
    checkSchemaLimits(rest, this.schemaLimits);
    return rest;
  }

  private async compileIn(
    thread: EngineThread,
    format: JsonFormat,
    key: string,
    check: object | undefined,
  ): Promise<number> {
    const grammarId = newId();
    const json = format.schema === undefined ? ANY_OBJECT : JSON.stringify(workAroundXgrammar(format.schema));
    try {
      await thread.request({
        op: 'compile',
        grammarId,
        json,
        strict: format.schema !== undefined,
        ...(check ? { check } : {}),
      });
      return grammarId;
    } catch (e) {
      if (!(e instanceof EngineRequestError)) throw e;
      if (e.kind === 'invalid') throw new InvalidSchemaError(e.message);
      if (e.kind === 'error')
        throw new InvalidSchemaError(`the schema is not supported by the grammar compiler: ${e.message}`);
      const why =
        e.kind === 'trap'
          ? `the grammar compiler failed on this schema (${e.message}); the schema is not supported`
          : e.kind === 'time' || e.kind === 'memory'
            ? `the schema is too complex for the grammar compiler: ${e.message}`
            : `the grammar compiler failed on this schema (${e.message})`;
      // It ended the engine: it is not compiled again (it would end the next one too).
      const err = new InvalidSchemaError(why);
      this.refused.set(key, err);
      throw err;
    }
  }

  /** A fresh grammar state for one sequence. */
  async constraint(compiled: CompiledFormat): Promise<GrammarConstraint> {
    const start = await this.matcher(compiled, []);
    return new GrammarConstraint(start, this.words, { rebuild: (tokens) => this.matcher(compiled, tokens) });
  }

  /** A matcher of `compiled`'s format that has accepted `tokens`, on the current engine (compiled there if it ended since). */
  private async matcher(compiled: CompiledFormat, tokens: readonly number[]): Promise<EngineMatcher> {
    for (let attempt = 0; ; attempt++) {
      const c = compiled.engine.dead ? await this.compileOn(compiled.format, compiled.key, false) : compiled;
      const matcherId = newId();
      try {
        await c.engine.request({ op: 'matcher', grammarId: c.grammarId, matcherId, replay: [...tokens] });
        return { engine: c.engine, matcherId };
      } catch (e) {
        if (!(e instanceof EngineDiedError) || attempt >= 2) throw e;
      }
    }
  }

  /** Ends the engine thread (worker shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    const current = this.current;
    this.current = undefined;
    const engine = await current?.catch(() => undefined);
    await engine?.thread.close();
  }
}
