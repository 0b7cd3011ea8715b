#!/usr/bin/env node
// loraplex-worker: one serving process per GPU (or CPU). Prints one JSON line when listening
// ({"event":"listening","port":N,...}) and one when drained; SIGTERM/SIGINT drain gracefully, within
// LORAPLEX_SHUTDOWN_TIMEOUT_S (default 25 s; then it exits 1, cutting what is left). Started with an
// IPC channel (by `loraplex worker` or the stack), it also drains when its parent dies.
import { parseCli } from './args.js';
import { assertSafeBind, startWorker } from './serve.js';

/** LORAPLEX_SHUTDOWN_TIMEOUT_S in seconds (default 25). */
function drainDeadlineS(): number {
  const raw = process.env.LORAPLEX_SHUTDOWN_TIMEOUT_S;
  const s = raw === undefined || raw === '' ? 25 : Number(raw);
  if (!Number.isFinite(s) || s < 0)
    throw new Error(`LORAPLEX_SHUTDOWN_TIMEOUT_S must be a number of seconds >= 0, got ${JSON.stringify(raw)}`);
  return s;
}

async function main(): Promise<void> {
  let opts, deadlineS: number;
  // Every configuration error exits 2 before the model is loaded.
  try {
    opts = parseCli(process.argv.slice(2));
    assertSafeBind(opts.host, opts);
    deadlineS = drainDeadlineS();
  } catch (e) {
    console.error((e as Error).message);
    process.exit(2);
  }
  const running = await startWorker(opts);
  const { worker, port } = running;
  console.log(
    JSON.stringify({
      event: 'listening',
      port,
      host: opts.host,
      model: worker.modelId,
      backend: worker.engine.backend,
      adapterSlots: worker.engine.options.maxAdapters,
      kvBlocks: worker.engine.kvUsage().totalBlocks,
    }),
  );
  let signalled = false;
  const onSignal = (sig: string): void => {
    if (signalled && sig === 'parent-exit') return; // already draining
    if (signalled) {
      console.error(`[worker] second ${sig}: exiting now`);
      process.exit(1);
    }
    signalled = true;
    console.log(
      JSON.stringify({
        event: 'draining',
        signal: sig,
        running: worker.scheduler.runningCount,
        waiting: worker.scheduler.waitingCount,
      }),
    );
    setTimeout(() => {
      console.error(
        `[worker] drain did not finish within ${deadlineS} s (${worker.scheduler.runningCount} running, ${worker.scheduler.waitingCount} waiting): exiting`,
      );
      process.exit(1);
    }, deadlineS * 1000).unref();
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
  if (process.channel) {
    // The parent's end of the IPC channel closes when the parent exits, however it exits.
    process.on('disconnect', () => onSignal('parent-exit'));
    process.channel.unref();
  }
}

main().catch((e: unknown) => {
  console.error(`[worker] ${(e as Error).message}`);
  process.exit(1);
});
