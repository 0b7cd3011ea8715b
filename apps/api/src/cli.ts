#!/usr/bin/env node
// loraplex-api: see src/commands.ts.
import { ConfigError } from './config.js';
import { runCommand, USAGE } from './commands.js';

runCommand(process.argv.slice(2)).catch((e: Error) => {
  console.error(e instanceof ConfigError ? `configuration error: ${e.message}` : e.message);
  process.exit(e.message === USAGE ? 0 : 1);
});
