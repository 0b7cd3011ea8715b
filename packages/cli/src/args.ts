// Argument parsing shared by the commands: node:util parseArgs, a UsageError (exit code 2) with
// the command's help text for anything unexpected.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {}

export type Options = NonNullable<ParseArgsConfig['options']>;

export const GLOBAL_OPTIONS = {
  'base-url': { type: 'string' },
  'api-key': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies Options;

export const GLOBAL_HELP = `  --base-url URL   the API (default $LORAPLEX_BASE_URL, else http://127.0.0.1:8080)
  --api-key KEY    an API key (default $LORAPLEX_API_KEY)`;

export interface Parsed {
  help: boolean;
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export function parse(
  argv: string[],
  options: Options,
  help: string,
  positionals: { min: number; max: number },
): Parsed {
  let r: { values: Parsed['values']; positionals: string[] };
  try {
    r = parseArgs({
      args: argv,
      options: { ...GLOBAL_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    }) as typeof r;
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${help}`);
  }
  if (r.values.help) return { help: true as const, values: r.values, positionals: r.positionals };
  if (r.positionals.length < positionals.min) throw new UsageError(`missing argument\n\n${help}`);
  if (r.positionals.length > positionals.max)
    throw new UsageError(`unexpected argument ${JSON.stringify(r.positionals[positionals.max])}\n\n${help}`);
  return { help: false as const, values: r.values, positionals: r.positionals };
}

export function intOpt(v: unknown, name: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${String(v)}`);
  return n;
}

export function numOpt(v: unknown, name: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new UsageError(`--${name} must be a number >= ${min}, got ${String(v)}`);
  return n;
}
