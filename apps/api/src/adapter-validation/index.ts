// Validation of uploaded adapters (docs/platform-contract.md §5): pure functions over streams and
// directories, used by the API's upload routes.
export { ALLOWED_FILES, type ArchiveLimits } from './entries.js';
export { AdapterValidationError, type AdapterValidationCode } from './errors.js';
export { byteLimit, extractArchive, type ArchiveFormat } from './extract.js';
export { validateAdapterFiles, type ValidatedAdapter, type ValidationLimits } from './validate.js';
