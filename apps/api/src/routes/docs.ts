// GET /docs (Swagger UI over /openapi.json), its assets from the swagger-ui-dist package (served by
// the API itself, so the page works offline and loads nothing from a CDN), and GET / for a browser:
// a small page linking the docs. JSON clients of / keep getting the 404 every unknown path gets.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { swaggerUI } from '@hono/swagger-ui';
import type { Context } from 'hono';
import { errorResponse } from '../errors.js';
import type { App } from '../services.js';

/** @hono/swagger-ui appends /swagger-ui-dist/<file> to its baseUrl. */
export const DOCS_ASSET_BASE = '/docs';
const ASSET_PREFIX = `${DOCS_ASSET_BASE}/swagger-ui-dist/`;

/** The files the page loads, and their content types: nothing else of the package is served. */
const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
};

let distDir: string | undefined;
function swaggerUiDistDir(): string {
  distDir ??= dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  return distDir;
}

const assetCache = new Map<string, Promise<Buffer>>();

function serveAsset(file: string) {
  return async function asset(c: Context): Promise<Response> {
    let body = assetCache.get(file);
    if (!body) {
      body = readFile(join(swaggerUiDistDir(), file));
      body.catch(() => assetCache.delete(file));
      assetCache.set(file, body);
    }
    return c.body(new Uint8Array(await body), 200, {
      'content-type': ASSETS[file]!,
      // The package's version is pinned by the lockfile: a day's caching is safe across restarts.
      'cache-control': 'public, max-age=86400',
    });
  };
}

const LANDING_PAGE = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>loraplex API</title>
    <style>body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5 }</style>
  </head>
  <body>
    <h1>loraplex API</h1>
    <p>Multi-tenant LoRA adapter serving.</p>
    <ul>
      <li><a href="/docs">API documentation</a> (Swagger UI)</li>
      <li><a href="/openapi.json">OpenAPI document</a> (JSON)</li>
      <li><a href="/console">Console</a> <em>(coming)</em></li>
    </ul>
  </body>
</html>
`;

/** Whether the caller prefers HTML (a browser's Accept), not just accepts it via *\/*. */
function wantsHtml(c: Context): boolean {
  return (c.req.header('accept') ?? '').includes('text/html');
}

export function registerDocRoutes(app: App): void {
  for (const file of Object.keys(ASSETS)) app.get(`${ASSET_PREFIX}${file}`, serveAsset(file));
  app.get('/docs', swaggerUI({ url: '/openapi.json', baseUrl: DOCS_ASSET_BASE, title: 'loraplex API' }));
  app.get('/', (c) => {
    if (wantsHtml(c)) return c.html(LANDING_PAGE);
    return errorResponse(404, 'not_found', `no route for ${c.req.method} ${c.req.path}`);
  });
}
