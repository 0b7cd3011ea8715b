// The paged KV cache's bookkeeping: fixed-size blocks handed out from a free list. The native
// backend owns the block memory; sequences own block tables (lists of block ids).
import { EngineError } from './errors.js';

export class BlockAllocator {
  readonly numBlocks: number;
  readonly blockSize: number;
  private readonly free: number[];

  constructor(numBlocks: number, blockSize: number) {
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.free = [];
    for (let b = numBlocks - 1; b >= 0; b--) this.free.push(b);
  }

  get freeBlocks(): number {
    return this.free.length;
  }

  /** Blocks needed to hold `tokens` positions. */
  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /** Takes n blocks, or throws KV_CACHE_FULL and takes none (a new table: leases outside the scheduler). */
  allocate(n: number): number[] {
    const table: number[] = [];
    this.ensure(table, n * this.blockSize);
    return table;
  }

  /**
   * Grows a block table so that it covers `tokens` positions (the scheduler's one way to take
   * blocks), or throws KV_CACHE_FULL and takes none.
   */
  ensure(table: number[], tokens: number): void {
    const need = this.blocksFor(tokens) - table.length;
    if (need <= 0) return;
    if (need > this.free.length)
      throw new EngineError(
        'KV_CACHE_FULL',
        `the KV cache needs ${need} more block(s) but only ${this.free.length} of ${this.numBlocks} are free`,
      );
    for (let i = 0; i < need; i++) table.push(this.free.pop()!);
  }

  release(blocks: number[]): void {
    for (const b of blocks) {
      if (!Number.isInteger(b) || b < 0 || b >= this.numBlocks)
        throw new EngineError('INVALID_ARGUMENT', `block ${b} is not a block of this cache`);
    }
    this.free.push(...blocks);
    blocks.length = 0;
  }
}
