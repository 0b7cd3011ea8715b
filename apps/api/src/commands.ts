// The loraplex-api commands: serve the API, create the platform admin key, or start the embedded stack.
import { parseArgs } from 'node:util';
import { createKey } from './routes/keys.js';
import { configFromEnv } from './config.js';
import { openDatabase } from './db/client.js';
import { join } from 'node:path';
import { startApiServer } from './server.js';
import { startStack } from './stack.js';

export const USAGE = `usage:
  loraplex-api serve                         the API (configured by the environment; see README)
  loraplex-api keys create --admin [--name N]  create a platform admin key, printed once
  loraplex-api stack --model DIR [--port N] [--worker-port N] [--data-dir DIR] [--served-model-name NAME]
                     [--worker-cli PATH]     the API and one worker on the embedded defaults
                                             (the worker's dist/cli.js, default $LORAPLEX_WORKER_CLI)`;

/** SIGINT/SIGTERM stop gracefully; exit 0 when everything finished, 1 when the deadline cut requests. */
function onSignals(stop: () => Promise<unknown>): void {
  let stopping = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      stop().then(
        (clean) => process.exit(clean === false ? 1 : 0),
        (e: Error) => {
          console.error(e.message);
          process.exit(1);
        },
      );
    });
  }
}

export async function runCommand(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
  out: (line: string) => void = console.log,
): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === 'serve') {
    if (rest.length) throw new Error(`serve takes no arguments (configure it with environment variables)\n${USAGE}`);
    const config = configFromEnv(env);
    const api = await startApiServer(config);
    out(`loraplex API listening on ${api.url} (docs: ${api.url}/docs)`);
    onSignals(api.close);
    return;
  }
  if (cmd === 'keys') {
    const { values, positionals } = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: { admin: { type: 'boolean' }, name: { type: 'string' } },
    });
    if (positionals[0] !== 'create' || positionals.length !== 1 || !values.admin)
      throw new Error(
        `only "keys create --admin" is available here; tenant keys are created through POST /v1/keys\n${USAGE}`,
      );
    const config = configFromEnv(env);
    const db = await openDatabase(
      config.databaseUrl ? { databaseUrl: config.databaseUrl } : { dataDir: join(config.dataDir, 'pg') },
    );
    try {
      const { key, row } = await createKey(db.db, null, ['admin'], values.name ?? 'admin');
      out(`created platform admin key ${row.id} (prefix ${row.prefix}); it is shown only now:\n${key}`);
    } finally {
      await db.close();
    }
    return;
  }
  if (cmd === 'stack') {
    const { values, positionals } = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: true,
      options: {
        model: { type: 'string' },
        port: { type: 'string' },
        'worker-port': { type: 'string' },
        'data-dir': { type: 'string' },
        'served-model-name': { type: 'string' },
        host: { type: 'string' },
        'worker-cli': { type: 'string' },
      },
    });
    if (positionals.length || !values.model) throw new Error(`stack needs --model DIR\n${USAGE}`);
    const num = (name: string, v: string | undefined): number | undefined => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--${name} must be a port number, got ${v}`);
      return n;
    };
    const envConfig = configFromEnv(env); // every setting of `serve` applies to the stack too
    const port = num('port', values.port);
    const workerPort = num('worker-port', values['worker-port']);
    const stack = await startStack({
      config: envConfig,
      model: values.model,
      ...(port !== undefined ? { port } : {}),
      ...(workerPort !== undefined ? { workerPort } : {}),
      ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}),
      ...(values['served-model-name'] ? { servedModelName: values['served-model-name'] } : {}),
      ...(values.host ? { host: values.host } : {}),
      ...(values['worker-cli'] ? { workerCli: values['worker-cli'] } : {}),
    });
    onSignals(stack.close);
    return;
  }
  throw new Error(cmd === undefined || cmd === '--help' || cmd === '-h' ? USAGE : `unknown command ${cmd}\n${USAGE}`);
}
