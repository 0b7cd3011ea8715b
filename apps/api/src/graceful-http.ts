// Graceful stop of the API's HTTP server (issue 11). On drain():
// - requests already in flight finish; requests that arrive on connections opened before the
//   drain are still answered, and every answer from then on carries `Connection: close`, so
//   keep-alive clients reconnect elsewhere instead of finding a dead socket;
// - connections opened after the drain started are refused with 503 shutting_down (the listener
//   stays open only so that worker heartbeats keep arriving: without them the registry would
//   judge healthy workers stale while the last streams finish);
// - /health and /ready answer 503 so load balancers stop sending work;
// - it resolves once no request is in flight and every client connection has closed (after an
//   answer with `Connection: close`, or when the client or the server's keep-alive timeout closes
//   it; idle connections are not cut at once, because a client may be sending on one right now
//   and would get a reset), or when the deadline cuts what is left.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { HEARTBEAT_PATH } from '@loraplex/protocol';
import { errorResponse } from './errors.js';

type Fetch = (
  req: Request,
  env: { incoming: IncomingMessage; outgoing: ServerResponse },
) => Response | Promise<Response>;

interface SocketState {
  /** Opened after the drain started: only heartbeats are served on it. */
  lateComer: boolean;
  /** Carried a request other than a heartbeat: the drain waits for it to close. */
  client: boolean;
}

function withConnectionClose(res: Response): Response {
  const headers = new Headers(res.headers);
  headers.set('connection', 'close');
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

export class GracefulHttp {
  private draining = false;
  private inFlight = 0;
  private readonly sockets = new Map<Socket, SocketState>();
  private onChange: () => void = () => undefined;
  private server: Server | undefined;

  /** `fetch`: the app's; serve `this.fetch` (it runs behind the drain gate), then attach() the server. */
  constructor(private readonly appFetch: Fetch) {}

  /** Tracks the server's connections (call it once the server exists, before it accepts any). */
  attach(server: Server): void {
    this.server = server;
    server.on('connection', (socket: Socket) => {
      this.sockets.set(socket, { lateComer: this.draining, client: false });
      socket.once('close', () => {
        this.sockets.delete(socket);
        this.onChange();
      });
    });
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** The app's fetch behind the drain gate (built once: a request passes one function here). */
  readonly fetch: Fetch = async (req, env) => {
    const path = (env.incoming.url ?? '/').split('?', 1)[0];
    if (path === HEARTBEAT_PATH) return this.appFetch(req, env);
    const state = this.sockets.get(env.incoming.socket);
    if (this.draining && path === '/health')
      return withConnectionClose(Response.json({ status: 'draining' }, { status: 503 }));
    if (this.draining && path === '/ready') {
      return withConnectionClose(
        Response.json(
          { status: 'draining', ready: false, reasons: ['this instance is shutting down'] },
          { status: 503 },
        ),
      );
    }
    if (this.draining && (state?.lateComer ?? true)) {
      return errorResponse(503, 'shutting_down', 'this API instance is shutting down; retry', {
        'retry-after': '1',
        connection: 'close',
      });
    }
    if (state) state.client = true;
    this.inFlight++;
    env.outgoing.once('close', () => {
      this.inFlight--;
      if (this.draining) this.onChange();
    });
    const res = await this.appFetch(req, env);
    return this.draining ? withConnectionClose(res) : res;
  };

  private settled(): boolean {
    if (this.inFlight > 0) return false;
    for (const s of this.sockets.values()) if (s.client) return false;
    return true;
  }

  /** Drains (see the file comment); true when everything finished before the deadline. */
  async drain(deadlineMs: number): Promise<boolean> {
    this.draining = true;
    let timer: NodeJS.Timeout | undefined;
    const clean = await new Promise<boolean>((resolve) => {
      this.onChange = () => {
        if (this.settled()) resolve(true);
      };
      timer = setTimeout(() => resolve(false), deadlineMs);
      this.onChange();
    });
    clearTimeout(timer);
    this.onChange = () => undefined;
    const server = this.server;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Worker heartbeat connections, and whatever the deadline cut.
        server.closeAllConnections();
      });
    }
    return clean;
  }
}
