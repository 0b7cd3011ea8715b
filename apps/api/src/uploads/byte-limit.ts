// Counts the bytes of a request body as they stream and fails with 413 the moment a limit is passed.
import { Transform, type TransformCallback } from 'node:stream';
import { tooLarge } from '../errors.js';

export class ByteLimit extends Transform {
  bytes = 0;
  exceeded = false;

  constructor(
    private readonly limit: number,
    private readonly what = 'the upload',
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      this.exceeded = true;
      cb(this.error());
      return;
    }
    cb(null, chunk);
  }

  error(): Error {
    return tooLarge(`${this.what} is larger than the limit of ${this.limit} bytes`);
  }
}
