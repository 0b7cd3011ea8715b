// A TCP proxy in front of a real server (s3rver in the tests) that can be cut like a failing
// network: every connection is dropped and new ones are refused until restore(). It records the
// HTTP request lines it forwards, and can cut itself when a request line matches.
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface CutProxy {
  url: string;
  /** Request lines seen ("PUT /bucket/key?... HTTP/1.1"). */
  requests: string[];
  /** Cut as soon as a request line matches (the matching request is not forwarded). */
  cutOn(pattern: RegExp): void;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

const REQUEST_LINE = /^(GET|PUT|POST|DELETE|HEAD) \S+ HTTP\/1\.[01]$/gm;

export async function startCutProxy(targetPort: number): Promise<CutProxy> {
  const sockets = new Set<Socket>();
  let down = false;
  let trigger: RegExp | undefined;
  const requests: string[] = [];
  const cut = (): void => {
    down = true;
    trigger = undefined;
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  const server: Server = createServer((client) => {
    if (down) return void client.destroy();
    const upstream = connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.on('data', (chunk: Buffer) => {
      for (const m of chunk.toString('latin1').matchAll(REQUEST_LINE)) {
        requests.push(m[0]);
        if (trigger?.test(m[0])) return cut();
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    cutOn: (pattern) => void (trigger = pattern),
    cut,
    restore: () => void (down = false),
    close: async () => {
      cut();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
}
