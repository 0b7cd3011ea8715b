// Server-sent events from a fetch Response body: yields each event's data (joined `data:` lines),
// stopping at `[DONE]`. An `{"error": ...}` event (what OpenAI-style servers send when a stream
// fails midway) becomes a thrown typed error.
import { errorFromResponse, LoraplexError } from './errors.js';

export async function* sseData(res: Response): AsyncGenerator<unknown> {
  if (!res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let sep: RegExpExecArray | null;
      while ((sep = /\r?\n\r?\n/.exec(buf))) {
        const event = buf.slice(0, sep.index);
        buf = buf.slice(sep.index + sep[0].length);
        const data = event
          .split(/\r?\n/)
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(l.startsWith('data: ') ? 6 : 5))
          .join('\n');
        if (data === '') continue;
        if (data === '[DONE]') return;
        let obj: unknown;
        try {
          obj = JSON.parse(data);
        } catch {
          throw new LoraplexError(`malformed event from the server: ${data.slice(0, 200)}`);
        }
        const err = (obj as { error?: unknown } | null)?.error;
        if (err !== undefined && err !== null) {
          const status = typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 500;
          throw errorFromResponse(status >= 400 ? status : 500, obj, new Headers());
        }
        yield obj;
      }
    }
  } finally {
    (res as Response & { clearTimeout?: () => void }).clearTimeout?.();
    await reader.cancel().catch(() => undefined);
  }
}
