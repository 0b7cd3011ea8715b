// multipart/form-data uploads, parsed as they stream (busboy): each file goes straight to disk in
// the upload's temp directory, so a form is never held in memory.
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import busboy from 'busboy';
import { badRequest, tooLarge } from '../errors.js';

export const ADAPTER_FILE_NAMES = new Set([
  'adapter_config.json',
  'adapter_model.safetensors',
  'adapter_model.bin',
  'tokenizer_config.json',
]);

export interface FormUpload {
  fields: Record<string, string>;
  files: string[];
}

const FIELDS = new Set(['name', 'base_model']);

/** A part names its file by its filename or, failing that, its field name. */
function fileNameOf(field: string, filename: string | undefined): string | undefined {
  const base = filename?.split(/[\\/]/).pop();
  if (base && ADAPTER_FILE_NAMES.has(base)) return base;
  if (ADAPTER_FILE_NAMES.has(field)) return field;
  return undefined;
}

export function receiveForm(
  body: Readable,
  contentType: string,
  destDir: string,
  maxFileBytes: number,
): Promise<FormUpload> {
  return new Promise<FormUpload>((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({
        headers: { 'content-type': contentType },
        limits: { fileSize: maxFileBytes, files: ADAPTER_FILE_NAMES.size, fields: 8, fieldSize: 1024, parts: 16 },
      });
    } catch (e) {
      reject(badRequest(`malformed multipart request: ${(e as Error).message}`));
      return;
    }
    const fields: Record<string, string> = {};
    const files: string[] = [];
    const writes: Promise<void>[] = [];
    let failed: Error | undefined;
    const fail = (e: Error): void => {
      if (failed) return;
      failed = e;
      reject(e);
      bb.destroy(); // stops reading the request (the pipeline below destroys the body too)
    };
    bb.on('field', (name, value, info) => {
      if (!FIELDS.has(name))
        return fail(
          badRequest(
            `unexpected form field ${JSON.stringify(name)} (expected name, base_model and adapter files)`,
            'unexpected_field',
          ),
        );
      if (info.valueTruncated) return fail(badRequest(`form field ${name} is too long`));
      fields[name] = value;
    });
    bb.on('file', (field, stream, info) => {
      stream.on('error', () => undefined); // a part cut short by destroy(): already reported through fail()
      const name = fileNameOf(field, info.filename);
      if (!name) {
        stream.resume();
        return fail(
          badRequest(
            `unexpected file ${JSON.stringify(info.filename ?? field)}: send adapter_config.json, adapter_model.safetensors or adapter_model.bin, and optionally tokenizer_config.json`,
            'unexpected_file',
          ),
        );
      }
      if (files.includes(name)) {
        stream.resume();
        return fail(badRequest(`file ${name} was sent twice`, 'duplicate_file'));
      }
      files.push(name);
      stream.on('limit', () => fail(tooLarge(`file ${name} is larger than the limit of ${maxFileBytes} bytes`)));
      writes.push(pipeline(stream, createWriteStream(join(destDir, name))).catch((e: Error) => fail(e)));
    });
    bb.on('partsLimit', () => fail(badRequest('too many parts in the form')));
    bb.on('filesLimit', () => fail(badRequest('too many files in the form')));
    bb.on('fieldsLimit', () => fail(badRequest('too many fields in the form')));
    bb.on('error', (e: Error) => fail(badRequest(`malformed multipart request: ${e.message}`)));
    bb.on('close', () => {
      void Promise.all(writes).then(() => {
        if (!failed) resolve({ fields, files });
      });
    });
    // pipeline also reports a body that failed before it got here (the byte limit tripping early).
    pipeline(body, bb).catch((e: Error) => fail(e));
  });
}
