// What LoRAX's `parameters.adapter_source` means on a worker (docs/lorax.md has the table for the
// worker and the API):
// - absent / null: wherever this worker's adapters come from (its --adapter-dir, its --adapter-s3
//   prefix, or the adapter the platform's signed descriptor names);
// - local: an adapter under this worker's --adapter-dir, by name (never a path outside it);
// - s3: an adapter under this worker's --adapter-s3 prefix, by name;
// - hub: the adapter_id repository from the Hugging Face Hub, only on a worker started with
//   --allow-hub-adapters (hub-source.ts); without it a 400 that says how to serve the adapter;
// - pbase: never (a 400).
import type { LoraxAdapterSource } from '@loraplex/protocol';
import { badRequest } from '../server/errors.js';

/** Where this worker's adapters come from, as adapter_source names it. */
export type WorkerAdapterOrigin = 'local' | 's3' | 'other' | 'none';

/** Throws a 400 when `source` names a place this worker does not serve adapters from. */
export function checkAdapterSource(
  origin: WorkerAdapterOrigin,
  source: LoraxAdapterSource | null | undefined,
  hubAllowed = false,
): void {
  if (source === null || source === undefined || source === origin || (source === 'hub' && hubAllowed)) return;
  const param = 'parameters.adapter_source';
  if (source === 'hub') {
    throw badRequest(
      'adapter_source "hub": this worker does not download adapters from the Hugging Face Hub (it was started without ' +
        "--allow-hub-adapters). Download the adapter into the worker's --adapter-dir (one directory per adapter) and send adapter_source " +
        '"local" (or null) with its directory name, or start the worker with --allow-hub-adapters.',
      param,
    );
  }
  if (source === 'pbase') {
    throw badRequest(
      'adapter_source "pbase": Predibase adapters are not served. Put the adapter in the worker\'s --adapter-dir and send adapter_source "local" (or null).',
      param,
    );
  }
  if (source === 'local') {
    const hint = origin === 's3' ? ' (its adapters are in S3: send adapter_source "s3" or null)' : '';
    throw badRequest(
      `adapter_source "local": this worker was started without --adapter-dir${hint}; start it with --adapter-dir DIR to serve adapters from a directory.`,
      param,
    );
  }
  const hint =
    origin === 'local' ? ' (its adapters are in its --adapter-dir: send adapter_source "local" or null)' : '';
  throw badRequest(
    `adapter_source "s3": this worker was started without --adapter-s3${hint}; start it with --adapter-s3 s3://bucket/prefix/ to serve adapters from S3.`,
    param,
  );
}
