#!/usr/bin/env node
// loraplex: the command line. `loraplex dev` runs the embedded stack (API + one worker, PGlite and
// a local adapter store; the demo model when no --model is given), `loraplex worker` a worker on
// its own, and the other commands talk to an API through @loraplex/sdk.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LoraplexError } from '@loraplex/sdk';
import { intOpt, parse, UsageError } from './args.js';
import { DEMO_MODEL_DIR, DEMO_SERVED_NAME, demoBanner, ensureDemo } from './demo.js';
import { downloadHubModel, HUB_ID } from './hf-download.js';
import {
  adapters,
  ADAPTERS_HELP,
  generate,
  GENERATE_HELP,
  keys,
  KEYS_HELP,
  tenants,
  TENANTS_HELP,
} from './commands.js';

const HELP = `usage: loraplex <command> [options]

commands:
  dev                 run the embedded platform (API + one worker) on this machine
  worker --model DIR  run one worker on its own (same flags as loraplex-worker)
  keys                create, list and revoke API keys
  tenants             create and list tenants
  adapters            upload, list, get and delete adapters
  generate "PROMPT"   stream a completion

Run \`loraplex <command> --help\` for a command's options.`;

const DEV_HELP = `usage: loraplex dev [--model DIR] [--served-model-name NAME] [--port N] [--host ADDR] [--data-dir DIR]
Starts the API and one worker on the embedded defaults (PGlite and adapter files under --data-dir,
default $LORAPLEX_DATA_DIR or ./.loraplex) and prints the URL and an admin key.
Without --model it serves the built-in demo model (${DEMO_SERVED_NAME}): a tiny Llama TRAINED to echo
the user's message, with three trained adapters uploaded for a \`demo\` tenant whose key it prints:
\`upper\` upper-cases, \`reverse\` reverses, \`extract\` turns "Ada is 36" into JSON. Inputs: 1-3
lowercase words, one chat turn. Point --model at a Hugging Face model directory (config.json,
*.safetensors, tokenizer.json), or give a Hub id (org/name: downloaded once into $LORAPLEX_CACHE_DIR or
~/.cache/loraplex; HF_TOKEN for gated models), for a real model.`;

const WORKER_HELP = `usage: loraplex worker --model DIR [worker flags]
Runs one worker (loraplex-worker). Flags: see \`loraplex worker --help\` below.`;

async function dev(argv: string[]): Promise<void> {
  const a = parse(
    argv,
    {
      model: { type: 'string' },
      'served-model-name': { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'data-dir': { type: 'string' },
    },
    DEV_HELP,
    { min: 0, max: 0 },
  );
  if (a.help) return void console.log(DEV_HELP);
  const dataDir = resolve((a.values['data-dir'] as string | undefined) ?? process.env.LORAPLEX_DATA_DIR ?? '.loraplex');
  const port = intOpt(a.values.port, 'port', 0);
  let startStack: typeof import('@loraplex/api').startStack;
  try {
    ({ startStack } = await import('@loraplex/api'));
  } catch (e) {
    throw new Error(`@loraplex/api is not built (${(e as Error).message}); run \`pnpm build\``);
  }
  let model = a.values.model as string | undefined;
  if (model && HUB_ID.test(model) && !existsSync(model)) {
    // org/name and no such directory here: a Hugging Face Hub id (HF_TOKEN for gated models).
    model = await downloadHubModel(model, { env: process.env, log: (l) => console.error(`[loraplex] ${l}`) });
  }
  let servedModelName = a.values['served-model-name'] as string | undefined;
  const demo = !model;
  if (!model) {
    console.error('[loraplex] no --model: serving the built-in demo model and its adapters (see --help)');
    model = DEMO_MODEL_DIR;
    servedModelName ??= DEMO_SERVED_NAME;
  }
  // The API does not depend on the worker; this CLI does, and says where the worker's CLI is.
  const workerCli = join(dirname(fileURLToPath(import.meta.resolve('@loraplex/worker'))), 'cli.js');
  const stack = await startStack({
    model,
    dataDir,
    workerCli,
    ...(servedModelName ? { servedModelName } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(typeof a.values.host === 'string' ? { host: a.values.host } : {}),
  });
  let demoKey: string | undefined;
  if (demo) {
    try {
      const d = await ensureDemo(stack.url, stack.adminKey, dataDir, servedModelName);
      for (const line of demoBanner(stack.url, d, servedModelName)) console.log(line);
      demoKey = d.key;
    } catch (e) {
      await stack.close();
      throw e;
    }
  }
  console.log(
    JSON.stringify({
      event: 'ready',
      url: stack.url,
      adminKey: stack.adminKey,
      model,
      ...(demoKey ? { demoKey } : {}),
    }),
  );
  const stop = (): void =>
    void stack.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

/**
 * Runs loraplex-worker as a child: SIGINT/SIGTERM are passed on (it drains), the child's exit
 * status becomes ours (with a line saying why when it failed), and the IPC channel makes the child
 * drain and exit when this process dies in a way it cannot pass on (SIGKILL).
 */
function worker(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) console.log(WORKER_HELP);
  const cli = join(dirname(fileURLToPath(import.meta.resolve('@loraplex/worker'))), 'cli.js');
  const child = spawn(process.execPath, [cli, ...argv], { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] });
  child.channel?.unref();
  let forwarded: NodeJS.Signals | undefined;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      forwarded = sig;
      child.kill(sig);
    });
  }
  return new Promise((res, rej) => {
    child.once('error', (e) => rej(new Error(`could not start the worker: ${e.message}`)));
    child.once('exit', (code, signal) => {
      if (code === 0) return res();
      if (signal)
        console.error(
          `loraplex: the worker was killed by ${signal}${forwarded === signal ? '' : ' (not sent by loraplex)'}`,
        );
      else console.error(`loraplex: the worker exited with code ${code}`);
      process.exitCode = code ?? 1;
      res();
    });
  });
}

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; help: string }> = {
  dev: { run: dev, help: DEV_HELP },
  worker: { run: worker, help: WORKER_HELP },
  keys: { run: keys, help: KEYS_HELP },
  tenants: { run: tenants, help: TENANTS_HELP },
  adapters: { run: adapters, help: ADAPTERS_HELP },
  generate: { run: generate, help: GENERATE_HELP },
};

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') return void console.log(HELP);
  const c = COMMANDS[cmd];
  if (!c) throw new UsageError(`unknown command ${JSON.stringify(cmd)}\n\n${HELP}`);
  await c.run(rest);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  if (e instanceof UsageError) {
    console.error(`loraplex: ${e.message}`);
    process.exit(2);
  }
  const status = e instanceof LoraplexError && e.status ? ` (HTTP ${e.status})` : '';
  console.error(`loraplex: ${(e as Error).constructor.name}${status}: ${(e as Error).message}`);
  process.exit(1);
});
