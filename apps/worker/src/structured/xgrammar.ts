// Loads @mlc-ai/web-xgrammar (the xgrammar grammar engine compiled to WebAssembly) into Node.
//
// Why not `import '@mlc-ai/web-xgrammar'`: version 0.1.27's package.json says "type": "module", but
// lib/index.js is a UMD bundle. Imported as ESM, `exports`, `module`, `require` and `__filename` do
// not exist and `this` is undefined, so the UMD wrapper writes the API onto globalThis and the
// emscripten loader inside it (which calls `require('url')` and `__filename`) throws. `require()`
// refuses it too (Node sees a .js file in an ESM package: ERR_REQUIRE_ESM). So the bundle is
// evaluated as what it really is, CommonJS: read the file and compile it with Node's own CJS module
// loader (Module#_compile), which supplies exports/require/module/__filename and — unlike
// vm.compileFunction without an experimental flag — a working dynamic `import('module')`, which the
// emscripten glue uses to find `createRequire`. The wasm binary is inlined in the bundle.
import { readFileSync } from 'node:fs';
import { createRequire, Module } from 'node:module';
import { dirname } from 'node:path';

/** The slice of the xgrammar API the worker uses (lib/xgrammar.d.ts of 0.1.27). */
export interface XgTokenizerInfo {
  getVocabSize(): number;
  dispose(): void;
}
export interface XgCompiledGrammar {
  dispose(): void;
}
/** A grammar before compiling: printed as EBNF text by toString(). */
export interface XgGrammar {
  toString(): string;
  dispose(): void;
}
export interface XgGrammarCompiler {
  compileGrammar(grammar: XgGrammar): Promise<XgCompiledGrammar>;
  compileJSONSchema(
    schema: string,
    anyWhitespace?: boolean,
    indent?: number,
    separators?: [string, string],
    strictMode?: boolean,
    maxWhitespaceCnt?: number,
  ): Promise<XgCompiledGrammar>;
  compileBuiltinJSONGrammar(): Promise<XgCompiledGrammar>;
  dispose(): void;
}
/**
 * A trap of the WebAssembly code that may have left its memory corrupt (out-of-bounds access,
 * unreachable): the instance must not be used again. xgrammar's own checks end in abort()
 * ("Aborted(...)"), which unwinds cleanly and leaves the instance usable.
 */
export const isTrap = (e: unknown): boolean =>
  e instanceof WebAssembly.RuntimeError && !e.message.startsWith('Aborted(');

export interface XgGrammarMatcher {
  acceptToken(tokenId: number): boolean;
  getNextTokenBitmask(): Promise<Int32Array>;
  isTerminated(): boolean;
  dispose(): void;
}
export interface Xgrammar {
  Grammar: {
    fromJSONSchema(
      schema: string,
      anyWhitespace?: boolean,
      indent?: number,
      separators?: [string, string],
      strictMode?: boolean,
      maxWhitespaceCnt?: number,
    ): Promise<XgGrammar>;
    fromEBNF(ebnf: string, rootRule?: string): Promise<XgGrammar>;
  };
  TokenizerInfo: {
    createTokenizerInfo(
      encodedVocab: string[],
      vocabType?: string,
      prependSpaceInTokenization?: boolean,
      vocabSize?: number,
      stopTokenIds?: number[] | number,
    ): Promise<XgTokenizerInfo>;
  };
  GrammarCompiler: { createGrammarCompiler(info: XgTokenizerInfo, cacheEnabled?: boolean): Promise<XgGrammarCompiler> };
  GrammarMatcher: {
    createGrammarMatcher(
      compiled: XgCompiledGrammar,
      overrideStopTokens?: number[] | number,
      terminateWithoutStopToken?: boolean,
    ): Promise<XgGrammarMatcher>;
  };
}

interface CjsModule {
  filename: string;
  paths: string[];
  exports: unknown;
  _compile(src: string, filename: string): void;
}
type ModuleCtor = (new (id: string) => CjsModule) & { _nodeModulePaths(dir: string): string[] };

/**
 * A fresh xgrammar: every call evaluates the bundle again, so it gets its own WebAssembly instance
 * and memory (the bundle keeps one instance per evaluation). A trap corrupts only that instance's
 * memory; the worker replaces it with a new one (structured-output.ts).
 */
export function loadXgrammar(): Xgrammar {
  const path = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
  const Ctor = Module as unknown as ModuleCtor;
  const m = new Ctor(path);
  m.filename = path;
  m.paths = Ctor._nodeModulePaths(dirname(path));
  m._compile(readFileSync(path, 'utf8'), path);
  return m.exports as Xgrammar;
}
