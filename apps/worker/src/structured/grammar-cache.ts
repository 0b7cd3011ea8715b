// Compiled grammars of one grammar engine, one per distinct response format, in an LRU cache. A
// compile is the expensive part of JSON mode (it walks the whole vocabulary); the matcher each
// sequence gets from a compiled grammar is cheap. Failures are cached too: an unsupported schema is
// rejected again without recompiling. Values are the engine's grammar ids.
import { Lru } from '@loraplex/common';

export class GrammarCache {
  private readonly entries: Lru<string, Promise<number>>;
  hits = 0;
  misses = 0;

  /** `evict`: frees an evicted grammar in the engine. */
  constructor(capacity: number, evict: (grammarId: number) => void) {
    this.entries = new Lru({
      maxEntries: capacity,
      // Matchers built from it keep their own reference to the grammar (xgrammar shares it by
      // reference count), so freeing it does not pull it from under a running sequence.
      onEvict: (_, evicted) => void evicted.then(evict, () => undefined),
    });
  }

  get size(): number {
    return this.entries.size;
  }

  /** The compiled grammar for `key`, compiling it with `compile` on a miss. */
  get(key: string, compile: () => Promise<number>): Promise<number> {
    const hit = this.entries.get(key);
    if (hit) {
      this.hits++;
      return hit;
    }
    this.misses++;
    const p = compile();
    p.catch(() => undefined); // a failed compile stays cached as a rejection
    this.entries.set(key, p);
    return p;
  }
}
