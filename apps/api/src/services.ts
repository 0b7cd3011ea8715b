// What the routes share: the database, the object store, auth, the adapter catalog, uploads and the
// ports of the routing and validation modules.
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { AdapterCatalog } from './adapters/catalog.js';
import type { Authenticator } from './auth/authenticator.js';
import type { AuthEnv } from './auth/middleware.js';
import type { ApiConfig } from './config.js';
import type { Db } from './db/client.js';
import type { AdapterValidation, RoutingPorts } from './ports.js';
import type { ObjectStore } from './storage/object-store.js';
import type { AdapterIngest } from './uploads/ingest.js';
import type { PresignedUploads } from './uploads/presigned.js';

export interface Services {
  db: Db;
  store: ObjectStore;
  auth: Authenticator;
  catalog: AdapterCatalog;
  ingest: AdapterIngest;
  uploads: PresignedUploads;
  validation: AdapterValidation;
  routing: RoutingPorts;
  config: ApiConfig;
}

export type App = OpenAPIHono<AuthEnv>;
