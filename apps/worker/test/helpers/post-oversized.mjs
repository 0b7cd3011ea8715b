// Run as its own process (node post-oversized.mjs '<json options>'): POSTs `bytes` bytes of a JSON
// prompt to `url`, with a Content-Length or chunked, pushing as fast as the server reads, and
// prints one JSON line: the status and Connection header answered (status 0 when the upload ended
// in a socket error before an answer, with the error's code), and how many bytes the socket took.
// Its own process, so the server under test does not share an event loop (or a CPU core's time
// slices) with a client busy writing tens of megabytes.
import { request } from 'node:http';

const { url, bytes, chunked, headers = {} } = JSON.parse(process.argv[2]);
const req = request(url, {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers, ...(chunked ? {} : { 'content-length': String(bytes) }) },
});
let answered;
let body = '';
let done = false;
const finish = (result) => {
  if (done) return;
  done = true;
  process.stdout.write(`${JSON.stringify({ ...result, bytesWritten: req.socket?.bytesWritten ?? 0 })}\n`);
  req.destroy();
};
req.on('response', (res) => {
  answered = { status: res.statusCode, connection: res.headers.connection ?? null };
  res.on('data', (d) => (body += d.toString()));
  res.on('end', () => finish({ ...answered, body }));
  res.on('error', () => finish({ ...answered, body }));
});
// The server may close the connection while this side still writes (it stopped reading at the
// limit): the write then fails, and what counts is whether the answer arrived first.
req.on('error', (e) =>
  finish(answered ? { ...answered, body } : { status: 0, connection: e.code ?? String(e), body: '' }),
);
const chunk = Buffer.alloc(1 << 20, 'a');
chunk.write('{"prompt":"');
let sent = 0;
const pump = () => {
  while (sent < bytes && !done) {
    const n = Math.min(chunk.length, bytes - sent);
    sent += n;
    if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once('drain', pump);
  }
  if (!done) req.end();
};
req.on('socket', pump);
