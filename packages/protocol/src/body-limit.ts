// The request body size limit of the worker and the API: hono's bodyLimit, without its stalls.
// hono's grows one buffer by doubling, so a chunked body near the limit allocates and copies 16,
// then 32 MiB in single steps, each stalling the event loop for 50-130 ms (measured on a shared
// 2-core machine); here the chunks are kept as they arrive and joined once, only for a body within
// the limit, and a body over it costs a counter per chunk.
// Typed structurally (the part of a hono Context it uses), so this package needs no hono.

/** What limitBodySize reads and replaces of a request context (hono's Context has it). */
export interface BodyLimitContext {
  req: { raw: Request };
}

/**
 * Bodies over `maxBytes` (by Content-Length before a byte is read, or once a chunked one passes it)
 * are answered by `onTooLarge` without reading the rest; a body within it is buffered for the route.
 */
export function limitBodySize<C extends BodyLimitContext>(
  maxBytes: number,
  onTooLarge: (c: C) => Response | Promise<Response>,
): (c: C, next: () => Promise<void>) => Promise<Response | void> {
  return async function limitBodySize(c, next) {
    const raw = c.req.raw;
    if (!raw.body) return next();
    const declared = raw.headers.get('content-length');
    if (declared !== null && !raw.headers.has('transfer-encoding'))
      return parseInt(declared, 10) > maxBytes ? onTooLarge(c) : next();
    const reader = raw.body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      // The rest is left unread: the answer closes the connection (Connection: close), which ends it.
      if (size > maxBytes) return onTooLarge(c);
      chunks.push(value);
    }
    c.req.raw = new Request(raw, { body: Buffer.concat(chunks, size) });
    return next();
  };
}
