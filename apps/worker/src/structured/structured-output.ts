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
// route, before the request is queued — never inside a scheduler step.
import { Ajv } from 'ajv';
import { GrammarConstraint } from './constraint.js';
import { GrammarCache } from './grammar-cache.js';
import { checkSchemaLimits, InvalidSchemaError } from './schema-limits.js';
import { workAroundXgrammar } from './schema-workarounds.js';
import { readVocabInfo } from './tokenizer-info.js';
import { Utf8Table } from './utf8-filter.js';
import { loadXgrammar, type Xgrammar, type XgCompiledGrammar, type XgGrammarCompiler } from './xgrammar.js';

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
}

interface Ready { xg: Xgrammar; compiler: XgGrammarCompiler; utf8: Utf8Table }

export class StructuredOutput {
  private ready: Promise<Ready> | undefined;
  private readonly cache: GrammarCache;
  private compileChain: Promise<unknown> = Promise.resolve();
  /** Lines xgrammar printed to stderr while a compile ran (its reason for rejecting a schema). */
  private captured: string[] | undefined;
  private readonly ajv = new Ajv({ strict: false, validateFormats: false });
  readonly words: number;

  constructor(private readonly opts: StructuredOutputOptions) {
    this.cache = new GrammarCache(opts.cacheSize ?? 64);
    this.words = Math.ceil(opts.vocab / 32);
  }

  get cacheStats(): { size: number; hits: number; misses: number } {
    return { size: this.cache.size, hits: this.cache.hits, misses: this.cache.misses };
  }

  private init(): Promise<Ready> {
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
        return { xg, compiler, utf8: new Utf8Table(info.tokenBytes, this.words) };
      } finally {
        console.error = original;
      }
    })();
    this.ready.catch(() => (this.ready = undefined));
    return this.ready;
  }

  /** Validates and compiles a format (cached). Throws InvalidSchemaError for an unusable schema. */
  async compile(format: JsonFormat): Promise<XgCompiledGrammar> {
    const { compiler } = await this.init();
    const key = format.schema === undefined ? `object:` : `schema:${JSON.stringify(format.schema)}`;
    return this.cache.get(key, () => {
      if (format.schema !== undefined) this.checkSchema(format.schema);
      const run = this.compileChain.then(() => this.compileNow(compiler, format));
      this.compileChain = run.catch(() => undefined);
      return run;
    });
  }

  private checkSchema(schema: unknown): void {
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new InvalidSchemaError('the schema must be a JSON object');
    // ajv knows draft-07 by default; `$schema` naming another draft is no reason to refuse.
    const { $schema: _ignored, ...rest } = schema as Record<string, unknown>;
    if (!this.ajv.validateSchema(rest)) throw new InvalidSchemaError(`not a valid JSON schema: ${this.ajv.errorsText(this.ajv.errors)}`);
    checkSchemaLimits(rest);
    try {
      this.ajv.compile(rest);
    } catch (e) {
      throw new InvalidSchemaError(`not a usable JSON schema: ${(e as Error).message}`);
    } finally {
      this.ajv.removeSchema(rest);
    }
  }

  private async compileNow(compiler: XgGrammarCompiler, format: JsonFormat): Promise<XgCompiledGrammar> {
    this.captured = [];
    try {
      if (format.schema === undefined) return await compiler.compileJSONSchema(ANY_OBJECT, false, -1, SEPARATORS, false);
      return await compiler.compileJSONSchema(JSON.stringify(workAroundXgrammar(format.schema)), false, -1, SEPARATORS, true);
    } catch (e) {
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
  async constraint(grammar: XgCompiledGrammar): Promise<GrammarConstraint> {
    const { xg, utf8 } = await this.init();
    const m = await xg.GrammarMatcher.createGrammarMatcher(grammar, this.opts.stopTokenIds, true);
    return new GrammarConstraint(m, this.words, utf8);
  }
}
