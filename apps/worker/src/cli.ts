#!/usr/bin/env node
// loraplex-worker: one serving process per GPU (or CPU). Prints one JSON line when listening
// ({"event":"listening","port":N,...}) and one when drained; SIGTERM/SIGINT drain gracefully.
import { parseCli } from './args.js';
import { assertSafeBind, startWorker } from './serve.js';

async function main(): Promise<void> {
  let opts;
  try {
    opts = parseCli(process.argv.slice(2));
    assertSafeBind(opts.host, opts);
  } catch (e) {
    console.error((e as Error).message);
    process.exit(2);
  }
  const running = await startWorker(opts);
  const { worker, port } = running;
  console.log(JSON.stringify({ event: 'listening', port, host: opts.host, model: worker.modelId, backend: worker.engine.backend, adapterSlots: worker.engine.options.maxAdapters, kvBlocks: worker.engine.blocks.numBlocks }));
  let signalled = false;
  const onSignal = (sig: string): void => {
    if (signalled) {
      console.error(`[worker] second ${sig}: exiting now`);
      process.exit(1);
    }
    signalled = true;
    console.log(JSON.stringify({ event: 'draining', signal: sig, running: worker.scheduler.runningCount, waiting: worker.scheduler.waitingCount }));
    running.drain().then(
      () => {
        console.log(JSON.stringify({ event: 'drained' }));
        process.exit(0);
      },
      (e: unknown) => {
        console.error(`[worker] drain failed: ${(e as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}

main().catch((e: unknown) => {
  console.error(`[worker] ${(e as Error).message}`);
  process.exit(1);
});
