// Why an uploaded adapter was refused, with the HTTP status the API answers: 400 for a malformed
// upload, 413 for one over a size limit, 422 for well-formed files that do not fit the base model or
// the deployment (wrong shapes, rank over the limit, DoRA, modules_to_save, ...).
export type AdapterValidationCode = 'malformed_archive' | 'unsafe_archive_entry' | 'too_large' | 'missing_file' | 'invalid_config' | 'invalid_weights' | 'incompatible_adapter' | 'unsupported_adapter';

const STATUS: Record<AdapterValidationCode, 400 | 413 | 422> = {
  malformed_archive: 400, unsafe_archive_entry: 400, missing_file: 400, invalid_config: 400, invalid_weights: 400,
  too_large: 413, incompatible_adapter: 422, unsupported_adapter: 422,
};

export class AdapterValidationError extends Error {
  readonly status: 400 | 413 | 422;
  constructor(readonly code: AdapterValidationCode, message: string) {
    super(message);
    this.name = 'AdapterValidationError';
    this.status = STATUS[code];
  }
}
