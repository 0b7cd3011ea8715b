// The messages between the worker's main thread and its grammar engine thread (engine-thread.ts,
// driven by engine-client.ts). Ids are chosen by the main thread: a request carries its own id, and
// the ids of what it creates (compiled grammars, matchers), so requests that depend on each other
// can be sent back to back: the thread handles them in order.
import type { VocabType } from './tokenizer-info.js';

/** What the thread needs to set xgrammar up (workerData): the vocabulary is read once by the main thread. */
export interface EngineThreadInit {
  encodedVocab: string[];
  tokenBytes: Uint8Array[];
  vocabType: VocabType;
  prependSpace: boolean;
  /** The model's logit width: masks have ceil(vocab / 32) words. */
  vocab: number;
  stopTokenIds: number[];
  /** Bytes of WebAssembly memory the engine may use; a request that needs more fails and ends the thread. */
  wasmMemoryLimit: number;
  /** Int32 slot 0: the id of the request the thread is executing (0 when idle), read when it dies. */
  progress: SharedArrayBuffer;
}

/**
 * `json`: the schema text given to the compiler; `strict`: no properties beyond those declared;
 * `check`: the user's schema, checked with ajv first (ajv compiles a schema to JS code: for a large
 * schema that takes seconds, so it runs here too, under the compile time limit).
 */
export type CompileRequest = {
  op: 'compile';
  id: number;
  grammarId: number;
  json: string;
  strict: boolean;
  check?: unknown;
};
export type MatcherRequest = { op: 'matcher'; id: number; grammarId: number; matcherId: number; replay: number[] };
/** `accept`: tokens drawn since the last request, fed to the matcher first; then the next mask if `mask`. */
export type AdvanceRequest = { op: 'advance'; id: number; matcherId: number; accept: number[]; mask: boolean };
export type DisposeRequest = { op: 'disposeMatcher' | 'disposeGrammar'; id: number; target: number };
export type EngineRequest = CompileRequest | MatcherRequest | AdvanceRequest | DisposeRequest;

/** How a request failed. `invalid`: ajv refused the schema (message as is); `trap`: the WebAssembly instance may be corrupt and the thread ends after this reply. */
export interface EngineFailure {
  ok: false;
  id: number;
  message: string;
  kind: 'error' | 'invalid' | 'trap' | 'memory' | 'rejected';
}
/**
 * An advance reply: `terminated` — the grammar is complete after the accepted tokens (a mask then
 * allows only the stop tokens); `mask` (when asked) — ceil(vocab / 32) words, bit t of word t >> 5 =
 * token t, already restricted to tokens that keep the output valid UTF-8 (transferred, not copied).
 */
export interface AdvanceReply {
  ok: true;
  id: number;
  terminated: boolean;
  mask?: ArrayBuffer;
}
export type EngineReply = { ok: true; id: number; terminated?: undefined } | AdvanceReply | EngineFailure;

/** Posted by the thread once before every compile starts: the compile time limit runs from here. */
export interface CompileStarted {
  started: number;
}
/** Posted by the thread once xgrammar is set up. */
export interface EngineReady {
  ready: true;
}
export type EngineMessage = { batch: EngineReply[] } | CompileStarted | EngineReady;
