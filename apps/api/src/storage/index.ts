export type { ObjectStore, CompletedPart, PresignPartOptions } from './object-store.js';
export { DirStore } from './dir-store.js';
export { S3Store, makeS3Client } from './s3-store.js';
