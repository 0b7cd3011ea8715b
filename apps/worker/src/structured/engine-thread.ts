// The grammar engine thread (node:worker_threads): one xgrammar WebAssembly instance, the grammars
// compiled in it and the matchers of the sequences using them. xgrammar cannot move a compiled
// grammar between instances, so compiling and matching live in the same thread. The main thread
// (engine-client.ts) sends batches of requests; they are handled strictly in order and answered in
// batches, masks transferred. Nothing here outlives the thread: when a request traps, runs past the
// time limit or needs more memory than allowed, the main thread ends this thread and starts another.
import { parentPort, workerData } from 'node:worker_threads';
import { Ajv } from 'ajv';
import type {
  AdvanceRequest,
  CompileRequest,
  EngineFailure,
  EngineReply,
  EngineRequest,
  EngineThreadInit,
  MatcherRequest,
} from './engine-protocol.js';
import { Utf8Table } from './utf8-filter.js';
import { jsonGrammar } from './json-whitespace.js';
import { isTrap, loadXgrammar, type XgCompiledGrammar, type XgGrammarMatcher } from './xgrammar.js';

const init = workerData as EngineThreadInit;
const port = parentPort!;
const progress = new Int32Array(init.progress);

// The memory limit: WebAssembly memory grows only through Memory#grow (emscripten's heap resize). A
// grow past the limit fails like an exhausted address space (the allocation fails inside xgrammar);
// the request that asked for it is answered 'memory' and the thread is not used again.
let overLimit = false;
const grow = WebAssembly.Memory.prototype.grow;
WebAssembly.Memory.prototype.grow = function limitedGrow(this: WebAssembly.Memory, pages: number): number {
  if (this.buffer.byteLength + pages * 65536 > init.wasmMemoryLimit) {
    overLimit = true;
    throw new RangeError(`WebAssembly memory limit of ${init.wasmMemoryLimit} bytes reached`);
  }
  return grow.call(this, pages);
};

// xgrammar prints its reason for refusing a schema through the emscripten error printer, bound to
// console.error when the module is instantiated (inside the first xgrammar call below).
let captured: string[] | undefined;
const printError = console.error;
console.error = (...args: unknown[]): void => {
  if (captured) captured.push(args.map(String).join(' '));
  else printError.apply(console, args);
};

const xg = loadXgrammar();
const info = await xg.TokenizerInfo.createTokenizerInfo(
  init.encodedVocab,
  init.vocabType,
  init.prependSpace,
  init.encodedVocab.length,
  init.stopTokenIds,
);
const compiler = await xg.GrammarCompiler.createGrammarCompiler(info);
const words = Math.ceil(init.vocab / 32);
const utf8 = new Utf8Table(init.tokenBytes, words);
const grammars = new Map<number, XgCompiledGrammar>();
/** A sequence's matcher and where its output stands within a UTF-8 character (utf8-filter.ts). */
const matchers = new Map<number, { matcher: XgGrammarMatcher; utf8State: number }>();
/** Set after a trap or an exceeded limit: the instance may be corrupt, nothing else runs in it. */
let unusable = false;

const failure = (id: number, kind: EngineFailure['kind'], message: string): EngineFailure => ({
  ok: false,
  id,
  kind,
  message,
});

const ajv = new Ajv({ strict: false, validateFormats: false });

/** ajv's verdict on a schema (that it is a valid, usable JSON schema); undefined if it is. */
function ajvRefusal(schema: object): string | undefined {
  if (!ajv.validateSchema(schema)) return `not a valid JSON schema: ${ajv.errorsText(ajv.errors)}`;
  try {
    ajv.compile(schema);
  } catch (e) {
    return `not a usable JSON schema: ${(e as Error).message}`;
  } finally {
    ajv.removeSchema(schema);
  }
  return undefined;
}

/** A schema's grammar, compiled: free, bounded whitespace between JSON tokens (json-whitespace.ts). */
async function compileJson(json: string, strict: boolean): Promise<XgCompiledGrammar> {
  const grammar = await jsonGrammar(xg, json, strict);
  try {
    return await compiler.compileGrammar(grammar); // the compiled grammar keeps its own copy
  } finally {
    grammar.dispose();
  }
}

async function compile(r: CompileRequest): Promise<EngineReply> {
  port.postMessage({ started: r.id });
  const refusal = r.check === undefined ? undefined : ajvRefusal(r.check as object);
  if (refusal) return failure(r.id, 'invalid', refusal);
  captured = [];
  try {
    grammars.set(r.grammarId, await compileJson(r.json, r.strict));
    return { ok: true, id: r.id };
  } catch (e) {
    if (isTrap(e) || overLimit) throw e; // the instance is done for: run() answers it
    // What xgrammar printed ("[FATAL] file:line: Check failed: (...) is false: reason") says why.
    const why = captured
      .filter((l) => l.includes('[FATAL]') || l.includes('error'))
      .map((l) => l.replace(/^\[FATAL\]\s*\S+:\d+:\s*/, '').replace(/^Check failed: \(.*\) is false:\s*/, ''))
      .join('; ');
    return failure(r.id, 'error', why || String((e as Error)?.message ?? e));
  } finally {
    captured = undefined;
  }
}

async function newMatcher(r: MatcherRequest): Promise<EngineReply> {
  const grammar = grammars.get(r.grammarId);
  if (!grammar) return failure(r.id, 'error', `no compiled grammar ${r.grammarId} in this engine`);
  const matcher = await xg.GrammarMatcher.createGrammarMatcher(grammar, init.stopTokenIds, true);
  const state = { matcher, utf8State: 0 };
  matchers.set(r.matcherId, state);
  for (const t of r.replay) {
    if (!matcher.acceptToken(t))
      return failure(r.id, 'rejected', `replaying the output: the grammar rejects token ${t}`);
    state.utf8State = utf8.after(state.utf8State, t);
  }
  return { ok: true, id: r.id };
}

async function advance(r: AdvanceRequest): Promise<EngineReply> {
  const s = matchers.get(r.matcherId);
  if (!s) return failure(r.id, 'error', `no matcher ${r.matcherId} in this engine`);
  for (const t of r.accept) {
    if (!s.matcher.acceptToken(t))
      return failure(r.id, 'rejected', `the grammar rejected token ${t}, which its mask allowed`);
    s.utf8State = utf8.after(s.utf8State, t);
  }
  const terminated = s.matcher.isTerminated();
  if (!r.mask) return { ok: true, id: r.id, terminated };
  const m = await s.matcher.getNextTokenBitmask(); // a copy out of WebAssembly memory: ours to transfer
  const mask = new Uint32Array(m.buffer, m.byteOffset, m.length);
  utf8.restrict(mask, s.utf8State); // if nothing valid were left, xgrammar's mask stands
  // An empty mask would fail the whole step in the sampler; fail this sequence alone instead.
  if (mask.every((w) => w === 0)) return failure(r.id, 'error', 'the grammar allows no token of this vocabulary here');
  return { ok: true, id: r.id, terminated, mask: mask.buffer as ArrayBuffer };
}

async function handle(r: EngineRequest): Promise<EngineReply> {
  switch (r.op) {
    case 'compile':
      return compile(r);
    case 'matcher':
      return newMatcher(r);
    case 'advance':
      return advance(r);
    case 'disposeMatcher':
      matchers.get(r.target)?.matcher.dispose();
      matchers.delete(r.target);
      return { ok: true, id: r.id };
    case 'disposeGrammar':
      // Matchers hold their own reference to the grammar (xgrammar counts them): safe while in use.
      grammars.get(r.target)?.dispose();
      grammars.delete(r.target);
      return { ok: true, id: r.id };
  }
}

/** Runs one request; a trap or an exceeded memory limit makes the instance unusable. */
async function run(r: EngineRequest): Promise<EngineReply> {
  Atomics.store(progress, 0, r.id);
  try {
    const reply = await handle(r);
    if (overLimit) throw new RangeError('memory limit');
    return reply;
  } catch (e) {
    if (overLimit) {
      unusable = true;
      return failure(
        r.id,
        'memory',
        `needed more than the grammar engine's memory limit (${Math.round(init.wasmMemoryLimit / 2 ** 20)} MiB)`,
      );
    }
    if (isTrap(e)) {
      unusable = true;
      return failure(r.id, 'trap', (e as Error).message);
    }
    return failure(r.id, 'error', e instanceof Error ? e.message : String(e));
  } finally {
    Atomics.store(progress, 0, 0);
  }
}

let chain: Promise<unknown> = Promise.resolve();
port.on('message', ({ batch }: { batch: EngineRequest[] }) => {
  chain = chain.then(async () => {
    const replies: EngineReply[] = [];
    const flush = (): void => {
      if (replies.length === 0) return;
      const out = replies.splice(0);
      port.postMessage(
        { batch: out },
        out.flatMap((r) => (r.ok && r.terminated !== undefined && r.mask ? [r.mask] : [])),
      );
    };
    for (const r of batch) {
      if (unusable) return flush(); // the main thread ends this thread on the reply that made it unusable
      if (r.op === 'compile') flush(); // answers that are ready do not wait for a compile
      replies.push(await run(r));
    }
    flush();
  });
});
port.postMessage({ ready: true });
