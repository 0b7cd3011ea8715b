// @loraplex/api: the multi-tenant API (contract §3) and the embedded stack (contract §4).
export { createApp, type AppDeps } from './app.js';
export { startApiServer, openStore, type ApiServer, type ApiServerWiring } from './server.js';
export { startStack, type Stack, type StackOptions } from './stack.js';
export { configFromEnv, defaultConfig, ConfigError, type ApiConfig, type S3Config } from './config.js';
export { openDatabase, MIGRATIONS_DIR, type Db, type OpenDatabase } from './db/client.js';
export { DirStore, S3Store, makeS3Client, type ObjectStore } from './storage/index.js';
export type * from './ports.js';
