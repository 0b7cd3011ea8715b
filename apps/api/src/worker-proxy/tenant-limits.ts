// Per-tenant limits on concurrent requests and tokens per minute, in this API process's memory.
// Tokens are known only when a request ends, so the minute's budget is checked at admission and
// charged afterwards (addTokens): requests admitted while under the limit may overshoot it a little,
// and the tenant then waits until enough of the last minute's tokens age out.
import { systemClock, type Clock } from '@loraplex/common';

export interface LimitOptions {
  /** Requests a tenant may have in flight; 0 or Infinity: unlimited. */
  maxConcurrent: number;
  /** Prompt + completion tokens per sliding 60 s; 0 or Infinity: unlimited. */
  tokensPerMinute: number;
  /** Per-tenant overrides (e.g. from the tenants table). */
  forTenant?: (tenantId: string) => Partial<Omit<LimitOptions, 'forTenant'>> | undefined;
}

/** A refusal: answer 429 with Retry-After: retryAfterS. */
export interface Limited {
  retryAfterS: number;
  reason: 'concurrency' | 'tokens_per_minute';
}

const WINDOW_S = 60;

interface TenantState {
  active: number;
  /** Tokens per whole second, keyed by the second (a 60-slot ring). */
  buckets: Float64Array;
  stamps: Float64Array;
}

const unlimited = (n: number): boolean => !(n > 0) || !Number.isFinite(n);

/**
 * Ends a request: frees its concurrency slot (once) and charges `tokens` (prompt + completion) to
 * the current second. Called with no tokens when the request ends without a count.
 */
export type Slot = (tokens?: number) => void;

/** The slot of a TenantLimits without any limit (the default): nothing to hold, nothing to count. */
function unlimitedSlot(): void {}

export class TenantLimits {
  private readonly tenants = new Map<string, TenantState>();
  /** No limit and no per-tenant override: no tenant can ever be refused, so nothing is tracked. */
  private readonly none: boolean;

  constructor(
    private readonly opts: LimitOptions,
    private readonly clock: Clock = systemClock,
  ) {
    this.none = !opts.forTenant && unlimited(opts.maxConcurrent) && unlimited(opts.tokensPerMinute);
  }

  private limits(tenantId: string): { maxConcurrent: number; tokensPerMinute: number } {
    const o = this.opts.forTenant?.(tenantId);
    return {
      maxConcurrent: o?.maxConcurrent ?? this.opts.maxConcurrent,
      tokensPerMinute: o?.tokensPerMinute ?? this.opts.tokensPerMinute,
    };
  }

  private state(tenantId: string): TenantState {
    let s = this.tenants.get(tenantId);
    if (!s)
      this.tenants.set(
        tenantId,
        (s = { active: 0, buckets: new Float64Array(WINDOW_S), stamps: new Float64Array(WINDOW_S).fill(-1) }),
      );
    return s;
  }

  /** Tokens charged in the 60 s before now. */
  tokensUsed(tenantId: string): number {
    const s = this.tenants.get(tenantId);
    if (!s) return 0;
    const sec = Math.floor(this.clock.now() / 1000);
    let sum = 0;
    for (let i = 0; i < WINDOW_S; i++) if (s.stamps[i]! > sec - WINDOW_S) sum += s.buckets[i]!;
    return sum;
  }

  /** The request's slot (call it when the request ends), or why not and for how long. */
  acquire(tenantId: string): Slot | Limited {
    if (this.none) return unlimitedSlot;
    const { maxConcurrent, tokensPerMinute } = this.limits(tenantId);
    const s = this.state(tenantId);
    if (!unlimited(tokensPerMinute)) {
      const wait = this.secondsUntilUnder(s, tokensPerMinute);
      if (wait > 0) return { retryAfterS: wait, reason: 'tokens_per_minute' };
    }
    // Nobody can say when a running request ends; one second is the conventional short wait.
    if (!unlimited(maxConcurrent) && s.active >= maxConcurrent) return { retryAfterS: 1, reason: 'concurrency' };
    s.active++;
    let done = false;
    return (tokens) => {
      if (tokens !== undefined) this.addTokens(tenantId, tokens);
      if (done) return;
      done = true;
      s.active--;
      this.forgetIfIdle(tenantId, s);
    };
  }

  /** Charges a finished request's tokens to the current second. */
  addTokens(tenantId: string, n: number): void {
    if (!(n > 0)) return;
    const s = this.state(tenantId);
    const sec = Math.floor(this.clock.now() / 1000);
    const i = sec % WINDOW_S;
    if (s.stamps[i] !== sec) {
      s.stamps[i] = sec;
      s.buckets[i] = 0;
    }
    s.buckets[i]! += n;
  }

  /** Whole seconds until the tokens of the last minute fall below the limit (0: under it now). */
  private secondsUntilUnder(s: TenantState, limit: number): number {
    const sec = Math.floor(this.clock.now() / 1000);
    const live: Array<[number, number]> = [];
    let used = 0;
    for (let i = 0; i < WINDOW_S; i++) {
      if (s.stamps[i]! > sec - WINDOW_S && s.buckets[i]! > 0) {
        live.push([s.stamps[i]!, s.buckets[i]!]);
        used += s.buckets[i]!;
      }
    }
    if (used < limit) return 0;
    live.sort((a, b) => a[0] - b[0]);
    for (const [stamp, n] of live) {
      used -= n;
      // The bucket of second `stamp` leaves the window at stamp + 60.
      if (used < limit) return Math.max(1, Math.ceil(stamp + WINDOW_S - this.clock.now() / 1000));
    }
    return WINDOW_S;
  }

  private forgetIfIdle(tenantId: string, s: TenantState): void {
    if (s.active === 0 && this.tokensUsed(tenantId) === 0) this.tenants.delete(tenantId);
  }
}
