// A rescanning source: another source's listing, re-scanned every `refreshMs` (NIM's adapter-directory
// refresh). Between scans, lookups answer from the last listing, so an adapter dropped into the
// directory appears (in /v1/models and to requests) within one interval, and a scan never runs on
// the request path. A failed scan keeps the previous listing.
import type { AdapterLocation, AdapterSource } from './source.js';

export class RescanningSource implements AdapterSource {
  private byName = new Map<string, AdapterLocation>();
  private timer: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  /** The last scan's error, if it failed (reported in logs once per change). */
  lastError: string | undefined;

  constructor(
    private readonly inner: AdapterSource,
    private readonly refreshMs: number,
  ) {}

  /** First scan (awaited), then one every refreshMs. */
  async start(): Promise<void> {
    await this.refresh();
    if (this.refreshMs > 0) {
      this.timer = setInterval(() => void this.refresh(), this.refreshMs);
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Scans now (joins a scan in progress). */
  refresh(): Promise<void> {
    this.scanning ??= (async () => {
      try {
        const all = await this.inner.list();
        this.byName = new Map(all.map((d) => [d.name, d]));
        if (this.lastError !== undefined) console.error('[worker] adapter source scan recovered');
        this.lastError = undefined;
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        if (msg !== this.lastError)
          console.error(`[worker] adapter source scan failed (keeping the previous listing): ${msg}`);
        this.lastError = msg;
      } finally {
        this.scanning = undefined;
      }
    })();
    return this.scanning;
  }

  list(): Promise<AdapterLocation[]> {
    return Promise.resolve([...this.byName.values()]);
  }

  lookup(name: string): Promise<AdapterLocation | undefined> {
    return Promise.resolve(this.byName.get(name));
  }
}
