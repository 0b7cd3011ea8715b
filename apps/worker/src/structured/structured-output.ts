// JSON mode for one worker: turns a response format (any JSON object, or a JSON schema) into a
// compiled xgrammar grammar (cached), and a compiled grammar into one GrammarConstraint per sequence.
// Everything is set up on the first JSON-mode request (the vocabulary pass costs time for a large
// tokenizer; a worker that never sees JSON mode never pays it).
//
// Output format: one line, no free whitespace, separators ", " and ": " (Python json.dumps style).
// Free whitespace would let a model pad forever; one line keeps outputs short and unambiguous.
//
// xgrammar's compile (and mask) calls are synchronous WebAssembly under a Promise API: they run on
// the event loop. Compiles are serialised (one at a time), cached per schema, and happen in the
// route, before the request is queued — never inside a scheduler step. A schema reaches the
// compiler only after schema-limits.ts passed it (bounded depth and size, nothing it cannot honour).
//
// Isolation: the grammar engine (one xgrammar WebAssembly instance: tokenizer info, compiler,
// compiled grammars, matchers) is replaced as soon as any call into it traps (isTrap): the call's
// own request fails, the cache of grammars compiled by it is dropped, and the next request builds
// a fresh instance. Sequences still decoding on the old one move over at their next mask: their
// grammar is compiled again on the new instance and their accepted tokens replayed (constraint.ts).
import { Ajv } from 'ajv';
import { GrammarConstraint, type EngineMatcher } from './constraint.js';
import { GrammarCache } from './grammar-cache.js';
import { checkSchemaLimits, InvalidSchemaError, SCHEMA_LIMITS, type SchemaLimits } from './schema-limits.js';
import { workAroundXgrammar } from './schema-workarounds.js';
import { readVocabInfo } from './tokenizer-info.js';
import { Utf8Table } from './utf8-filter.js';
import { isTrap, loadXgrammar, type Xgrammar, type XgCompiledGrammar, type XgGrammarCompiler } from './xgrammar.js';

/** A response format: `schema` undefined means any JSON object. */
export interface JsonFormat { schema?: unknown }

export { InvalidSchemaError };

const SEPARATORS: [string, string] = [', ', ': '];
const ANY_OBJECT = '{"type":"object"}';

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
}

/** One grammar engine: an xgrammar instance and what was built in it. */
export interface GrammarEngine {
  xg: Xgrammar;
  compiler: XgGrammarCompiler;
  utf8: Utf8Table;
  /** Compiled grammars of this instance, by format key. */
  cache: GrammarCache;
  /** A call into it trapped: nothing may use it again. */
  retired: boolean;
}

/** A compiled format: its grammar, the engine it lives in, and the key to compile it again elsewhere. */
export interface CompiledFormat {
  grammar: XgCompiledGrammar;
  engine: GrammarEngine;
  key: string;
  format: JsonFormat;
}

const formatKey = (format: JsonFormat): string => (format.schema === undefined ? `object:` : `schema:${JSON.stringify(format.schema)}`);

export class StructuredOutput {
  private ready: Promise<GrammarEngine> | undefined;
  /** Grammar engines replaced after a trap. */
  enginesReplaced = 0;
  private hits = 0;
  private misses = 0;
  private compileChain: Promise<unknown> = Promise.resolve();
  /** Lines xgrammar printed to stderr while a compile ran (its reason for rejecting a schema). */
  private captured: string[] | undefined;
  private readonly ajv = new Ajv({ strict: false, validateFormats: false });
  /** The vocabulary's UTF-8 tables: the same for every engine. */
  private utf8: Utf8Table | undefined;
  readonly words: number;

  constructor(private readonly opts: StructuredOutputOptions) {
    this.words = Math.ceil(opts.vocab / 32);
  }

  get cacheStats(): { size: number; hits: number; misses: number } {
    return { size: this.current?.cache.size ?? 0, hits: this.hits, misses: this.misses };
  }

  private current: GrammarEngine | undefined;

  /** Stops using `engine` (a call into it trapped); the next request gets a fresh instance. */
  retire(engine: { retired: boolean }): void {
    if (engine.retired) return;
    engine.retired = true; // its objects are dropped unfreed: the memory they would be freed in may be corrupt
    this.enginesReplaced++;
    if (this.current === engine) {
      this.current = undefined;
      this.ready = undefined;
    }
  }

  private init(): Promise<GrammarEngine> {
    this.ready ??= (async () => {
      const xg = loadXgrammar();
      const info = await readVocabInfo(this.opts.modelDir, this.opts.vocab);
      // The emscripten runtime binds its error printer (console.error) once, when the wasm module is
      // instantiated — inside the first xgrammar call below. Routing it through this function lets a
      // failed compile report xgrammar's reason instead of only "Aborted()".
      const original = console.error;
      console.error = (...args: unknown[]): void => {
        if (this.captured) this.captured.push(args.map(String).join(' '));
        else original.apply(console, args);
      };
      try {
        const ti = await xg.TokenizerInfo.createTokenizerInfo(info.encodedVocab, info.vocabType, info.prependSpace, info.encodedVocab.length, this.opts.stopTokenIds);
        const compiler = await xg.GrammarCompiler.createGrammarCompiler(ti);
        this.utf8 ??= new Utf8Table(info.tokenBytes, this.words);
        this.current = { xg, compiler, utf8: this.utf8, cache: new GrammarCache(this.opts.cacheSize ?? 64), retired: false };
        return this.current;
      } finally {
        console.error = original;
      }
    })();
    this.ready.catch(() => (this.ready = undefined));
    return this.ready;
  }

  /** Validates and compiles a format (cached). Throws InvalidSchemaError for an unusable schema. */
  async compile(format: JsonFormat): Promise<CompiledFormat> {
    const key = formatKey(format);
    return this.compileOn(format, key, true);
  }

  private async compileOn(format: JsonFormat, key: string, check: boolean): Promise<CompiledFormat> {
    const engine = await this.init();
    const before = engine.cache.misses;
    const p = engine.cache.get(key, () => {
      if (check && format.schema !== undefined) this.checkSchema(format.schema);
      const run = this.compileChain.then(() => this.compileNow(engine, format));
      this.compileChain = run.catch(() => undefined);
      return run;
    });
    if (engine.cache.misses === before) this.hits++;
    else this.misses++;
    return { grammar: await p, engine, key, format };
  }

  private checkSchema(schema: unknown): void {
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new InvalidSchemaError('the schema must be a JSON object');
    // ajv knows draft-07 by default; `$schema` naming another draft is no reason to refuse.
    const { $schema: _ignored, ...rest } = schema as Record<string, unknown>;
    // The limits first: they are cheap and bound what ajv then walks (and later compiles to code).
    checkSchemaLimits(rest, this.opts.limits ?? SCHEMA_LIMITS);
    if (!this.ajv.validateSchema(rest)) throw new InvalidSchemaError(`not a valid JSON schema: ${this.ajv.errorsText(this.ajv.errors)}`);
    try {
      this.ajv.compile(rest);
    } catch (e) {
      throw new InvalidSchemaError(`not a usable JSON schema: ${(e as Error).message}`);
    } finally {
      this.ajv.removeSchema(rest);
    }
  }

  private async compileNow(engine: GrammarEngine, format: JsonFormat): Promise<XgCompiledGrammar> {
    const { compiler } = engine;
    if (engine.retired) throw new InvalidSchemaError('the grammar engine failed on another schema: please retry');
    this.captured = [];
    try {
      if (format.schema === undefined) return await compiler.compileJSONSchema(ANY_OBJECT, false, -1, SEPARATORS, false);
      return await compiler.compileJSONSchema(JSON.stringify(workAroundXgrammar(format.schema)), false, -1, SEPARATORS, true);
    } catch (e) {
      if (isTrap(e)) {
        this.retire(engine);
        throw new InvalidSchemaError(`the grammar compiler failed on this schema (${(e as Error).message}); the schema is not supported`);
      }
      const why = this.captured
        .filter((l) => l.includes('[FATAL]') || l.includes('error'))
        .map((l) => l.replace(/^\[FATAL\]\s*\S+:\d+:\s*/, '').replace(/^Check failed: \(.*\) is false:\s*/, ''))
        .join('; ');
      throw new InvalidSchemaError(`the schema is not supported by the grammar compiler: ${why || String((e as Error)?.message ?? e)}`);
    } finally {
      this.captured = undefined;
    }
  }

  /** A fresh grammar state for one sequence. */
  async constraint(compiled: CompiledFormat): Promise<GrammarConstraint> {
    // Its engine may have been retired since the compile (another request's trap): start on the current one.
    const start = compiled.engine.retired ? await this.rebuild(compiled, []) : await this.matcher(compiled, []);
    return new GrammarConstraint(start, this.words, compiled.engine.utf8, {
      rebuild: (tokens) => this.rebuild(compiled, tokens),
      retire: (engine) => this.retire(engine),
    });
  }

  /** A matcher of `compiled` that has accepted `tokens`, on `compiled`'s engine (a trap retires it). */
  private async matcher(compiled: CompiledFormat, tokens: readonly number[]): Promise<EngineMatcher> {
    const { engine } = compiled;
    try {
      const matcher = await engine.xg.GrammarMatcher.createGrammarMatcher(compiled.grammar, this.opts.stopTokenIds, true);
      for (const t of tokens) if (!matcher.acceptToken(t)) throw new Error(`replaying the output: the grammar rejects token ${t}`);
      return { matcher, engine };
    } catch (e) {
      if (isTrap(e)) this.retire(engine);
      throw e;
    }
  }

  /** `compiled` on the current engine, with `tokens` accepted: a sequence moving off a retired engine. */
  private async rebuild(compiled: CompiledFormat, tokens: readonly number[]): Promise<EngineMatcher> {
    return this.matcher(await this.compileOn(compiled.format, compiled.key, false), tokens);
  }
}
