// Why an uploaded adapter was refused, with the HTTP status the API answers: 400 for an archive
// that cannot be read or holds unsafe entries, 413 for one over a size limit, 422 (the contract's
// adapter_invalid) for an upload that arrived intact but is not a servable adapter: a missing or
// unparsable config or weights file, wrong shapes, rank over the limit, DoRA, modules_to_save, ...
export type AdapterValidationCode =
  | 'malformed_archive'
  | 'unsafe_archive_entry'
  | 'too_large'
  | 'missing_file'
  | 'invalid_config'
  | 'invalid_weights'
  | 'incompatible_adapter'
  | 'unsupported_adapter';

const STATUS: Record<AdapterValidationCode, 400 | 413 | 422> = {
  malformed_archive: 400,
  unsafe_archive_entry: 400,
  too_large: 413,
  missing_file: 422,
  invalid_config: 422,
  invalid_weights: 422,
  incompatible_adapter: 422,
  unsupported_adapter: 422,
};

export class AdapterValidationError extends Error {
  readonly status: 400 | 413 | 422;
  constructor(
    readonly code: AdapterValidationCode,
    message: string,
  ) {
    super(message);
    this.name = 'AdapterValidationError';
    this.status = STATUS[code];
  }
}
