// The bad-upload suite at the module level: real fixture adapters pass as zip, tar and tar.gz
// against their base model; every malformed, unsafe, oversized or incompatible upload is refused
// with a clear reason and the destination left empty.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import { encodeSafetensors } from '@loraplex/formats';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AdapterValidationError,
  extractArchive,
  validateAdapterFiles,
  type ArchiveFormat,
} from '../src/adapter-validation/index.js';
import { paxPath, tar, zip, type TarEntry } from './helpers/archive-writers.js';

const FIXTURES = resolve(fileURLToPath(import.meta.url), '../../../../packages/engine/test/fixtures/hf-tiny');
const ADAPTERS = { lora_all_r8: [8, 16, 7], lora_qv_r4: [4, 8, 2], lora_qkvo_r16_rslora: [16, 16, 4] } as const;
const LIMITS = { maxFiles: 16, maxUncompressedBytes: 4 << 20, maxArchiveBytes: 2 << 20 };
const tmp = mkdtempSync(join(tmpdir(), 'lp-validate-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const modelConfig = (m: string): Record<string, unknown> =>
  JSON.parse(readFileSync(join(FIXTURES, m, 'base', 'config.json'), 'utf8'));
const filesOf = (m: string, a: string): TarEntry[] =>
  readdirSync(join(FIXTURES, m, 'adapters', a)).map((f) => ({
    name: `${a}/${f}`,
    data: readFileSync(join(FIXTURES, m, 'adapters', a, f)),
  }));
let n = 0;
const dest = (): string => {
  const d = join(tmp, `d${n++}`);
  mkdirSync(d);
  return d;
};
const archive = (format: ArchiveFormat, entries: TarEntry[]): Buffer =>
  format === 'zip'
    ? zip(entries.map((e) => ({ name: e.name, data: e.data ?? new Uint8Array(0), deflate: true })))
    : format === 'tar'
      ? tar(entries)
      : zlib.gzipSync(tar(entries));

async function refused(p: Promise<unknown>, code: string, message: RegExp, dir?: string): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, `expected ${code}`).toBeInstanceOf(AdapterValidationError);
  expect((e as AdapterValidationError).code).toBe(code);
  expect((e as AdapterValidationError).message).toMatch(message);
  if (dir) expect(readdirSync(dir)).toEqual([]);
}

describe('fixture adapters', () => {
  for (const m of ['llama', 'qwen2']) {
    for (const [a, [rank, alpha, modules]] of Object.entries(ADAPTERS)) {
      for (const format of ['zip', 'tar', 'tar.gz'] as const) {
        it(`${m}/${a} as ${format} extracts and validates against its base model`, async () => {
          const d = dest();
          const written = await extractArchive(Readable.from([archive(format, filesOf(m, a))]), format, d, LIMITS);
          expect(written.sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
          const v = await validateAdapterFiles(d, { modelConfig: modelConfig(m), maxRank: 64, maxBytes: 1 << 20 });
          expect(v).toMatchObject({ rank, alpha });
          expect(v.targetModules).toHaveLength(modules);
          expect(v.files.map((f) => f.name)).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
          expect(v.sha256).toMatch(/^[0-9a-f]{64}$/);
          expect(readFileSync(join(d, 'adapter_model.safetensors'))).toEqual(
            readFileSync(join(FIXTURES, m, 'adapters', a, 'adapter_model.safetensors')),
          );
        });
      }
    }
  }

  it('files at the top level (no wrapping folder), a pax-named entry and folder entries are fine', async () => {
    const d = dest();
    const [cfg, st] = filesOf('llama', 'lora_qv_r4');
    await extractArchive(
      Readable.from([
        tar([{ name: 'x/', type: '5' }, paxPath(cfg!.name), { name: 'ignored-name', data: cfg!.data! }, st!]),
      ]),
      'tar',
      d,
      LIMITS,
    );
    expect(readdirSync(d).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  });
});

describe('unsafe and malformed archives', () => {
  const cfg = filesOf('llama', 'lora_qv_r4')[0]!.data!;
  const cases: Array<[string, ArchiveFormat, Buffer, string, RegExp]> = [
    [
      '../ in a tar entry',
      'tar',
      tar([{ name: '../adapter_config.json', data: cfg }]),
      'unsafe_archive_entry',
      /leaves the upload directory/,
    ],
    [
      '../ in a zip entry',
      'zip',
      zip([{ name: 'a/../../adapter_config.json', data: cfg }]),
      'unsafe_archive_entry',
      /leaves the upload directory/,
    ],
    [
      'an absolute tar path',
      'tar',
      tar([{ name: '/etc/adapter_config.json', data: cfg }]),
      'unsafe_archive_entry',
      /absolute path/,
    ],
    [
      'an absolute zip path',
      'zip',
      zip([{ name: '/adapter_config.json', data: cfg }]),
      'unsafe_archive_entry',
      /absolute path/,
    ],
    [
      'a drive letter',
      'zip',
      zip([{ name: 'C:/adapter_config.json', data: cfg }]),
      'unsafe_archive_entry',
      /absolute path/,
    ],
    [
      'a backslash path',
      'zip',
      zip([{ name: '..\\adapter_config.json', data: cfg }]),
      'unsafe_archive_entry',
      /backslash/,
    ],
    [
      'a pax path escaping the folder',
      'tar',
      tar([paxPath('../../x/adapter_config.json'), { name: 'ok', data: cfg }]),
      'unsafe_archive_entry',
      /leaves the upload directory/,
    ],
    [
      'a tar symlink',
      'tar',
      tar([{ name: 'adapter_model.safetensors', type: '2', linkname: '/etc/passwd' }]),
      'unsafe_archive_entry',
      /symbolic link/,
    ],
    [
      'a tar hard link',
      'tar',
      tar([{ name: 'adapter_model.safetensors', type: '1', linkname: 'adapter_config.json' }]),
      'unsafe_archive_entry',
      /hard link/,
    ],
    ['a tar device', 'tar', tar([{ name: 'adapter_model.bin', type: '3' }]), 'unsafe_archive_entry', /device/],
    ['a tar FIFO', 'tar', tar([{ name: 'adapter_model.bin', type: '6' }]), 'unsafe_archive_entry', /FIFO/],
    [
      'a zip symlink',
      'zip',
      zip([{ name: 'adapter_model.safetensors', data: Buffer.from('/etc/passwd'), unixMode: 0o120777 }]),
      'unsafe_archive_entry',
      /symbolic link/,
    ],
    [
      'a file outside the allow list',
      'tar',
      tar([{ name: 'run.sh', data: Buffer.from('rm -rf /') }]),
      'unsafe_archive_entry',
      /not an adapter file/,
    ],
    [
      'nested folders',
      'zip',
      zip([{ name: 'a/b/adapter_config.json', data: cfg }]),
      'unsafe_archive_entry',
      /nests folders/,
    ],
    [
      'files in two folders',
      'tar',
      tar([
        { name: 'a/adapter_config.json', data: cfg },
        { name: 'b/adapter_model.bin', data: cfg },
      ]),
      'unsafe_archive_entry',
      /same folder/,
    ],
    [
      'a duplicate entry',
      'tar',
      tar([
        { name: 'adapter_config.json', data: cfg },
        { name: './adapter_config.json', data: cfg },
      ]),
      'unsafe_archive_entry',
      /appears twice/,
    ],
    [
      'a truncated tar',
      'tar',
      tar([{ name: 'adapter_config.json', data: cfg }], { end: false }).subarray(0, 700),
      'malformed_archive',
      /truncated/,
    ],
    [
      'a tar with a bad checksum',
      'tar',
      (() => {
        const t = tar([{ name: 'adapter_config.json', data: cfg }]);
        t[0] = 0x41;
        return t;
      })(),
      'malformed_archive',
      /checksum/,
    ],
    ['not gzip', 'tar.gz', Buffer.from('definitely not gzip data'), 'malformed_archive', /could not be read as tar.gz/],
    [
      'a truncated zip',
      'zip',
      zip([{ name: 'adapter_config.json', data: cfg }]).subarray(0, 40),
      'malformed_archive',
      /end-of-central-directory/,
    ],
    [
      'a zip whose data fails its CRC',
      'zip',
      (() => {
        const z = zip([{ name: 'adapter_config.json', data: cfg }]);
        const at = 30 + 'adapter_config.json'.length;
        z[at] = z[at]! ^ 0xff;
        return z;
      })(),
      'malformed_archive',
      /CRC-32/,
    ],
    [
      'a zip entry larger than it declares',
      'zip',
      zip([{ name: 'adapter_config.json', data: cfg, deflate: true, declaredSize: 10 }]),
      'malformed_archive',
      /beyond its declared size/,
    ],
    [
      'too many entries',
      'tar',
      tar(Array.from({ length: 20 }, (_, i) => ({ name: `d${i}/`, type: '5' as const }))),
      'too_large',
      /more than 16 entries/,
    ],
  ];
  it.each(cases)('refuses %s', async (_what, format, bytes, code, message) => {
    const d = dest();
    await refused(extractArchive(Readable.from([bytes]), format, d, LIMITS), code, message, d);
  });

  it('stops a zip bomb at the extraction limit, leaving nothing behind', async () => {
    const d = dest();
    const bomb = zip([{ name: 'adapter_model.safetensors', data: Buffer.alloc(64 << 20), deflate: true }]);
    expect(bomb.length).toBeLessThan(LIMITS.maxArchiveBytes);
    await refused(extractArchive(Readable.from([bomb]), 'zip', d, LIMITS), 'too_large', /expands to more than/, d);
  });

  it('stops a tar.gz bomb the same way', async () => {
    const d = dest();
    const bomb = zlib.gzipSync(tar([{ name: 'adapter_model.bin', data: Buffer.alloc(32 << 20) }]));
    await refused(extractArchive(Readable.from([bomb]), 'tar.gz', d, LIMITS), 'too_large', /expands to more than/, d);
  });

  it('refuses a 10x oversized upload while it streams in', async () => {
    const d = dest();
    let sent = 0;
    const huge = new Readable({
      read() {
        sent += 1 << 20;
        this.push(sent > 10 * LIMITS.maxArchiveBytes ? null : Buffer.alloc(1 << 20, 1));
      },
    });
    await refused(extractArchive(huge, 'zip', d, LIMITS), 'too_large', /larger than/, d);
    expect(sent).toBeLessThan(10 * LIMITS.maxArchiveBytes);
  });
});

describe('adapter files that do not fit', () => {
  const files = (a = 'lora_all_r8', m = 'llama'): string => {
    const d = dest();
    for (const f of readdirSync(join(FIXTURES, m, 'adapters', a)))
      writeFileSync(join(d, f), readFileSync(join(FIXTURES, m, 'adapters', a, f)));
    return d;
  };
  const limits = { modelConfig: modelConfig('llama'), maxRank: 64, maxBytes: 1 << 20 };
  const config = (d: string, patch: Record<string, unknown>): void =>
    writeFileSync(
      join(d, 'adapter_config.json'),
      JSON.stringify({ ...JSON.parse(readFileSync(join(d, 'adapter_config.json'), 'utf8')), ...patch }),
    );

  it('a missing config', async () => {
    const d = files();
    rmSync(join(d, 'adapter_config.json'));
    await refused(validateAdapterFiles(d, limits), 'missing_file', /no adapter_config.json/);
  });
  it('missing weights', async () => {
    const d = files();
    rmSync(join(d, 'adapter_model.safetensors'));
    await refused(validateAdapterFiles(d, limits), 'missing_file', /neither/);
  });
  it('a config that is not JSON', async () => {
    const d = files();
    writeFileSync(join(d, 'adapter_config.json'), '{"r": 8');
    await refused(validateAdapterFiles(d, limits), 'invalid_config', /not valid JSON/);
  });
  it('a DoRA config whose weights lack the magnitude vectors (DoRA itself is served: issue 16)', async () => {
    const d = files();
    config(d, { use_dora: true });
    await refused(validateAdapterFiles(d, limits), 'incompatible_adapter', /magnitude/i);
  });
  it('a modules_to_save config', async () => {
    const d = files();
    config(d, { modules_to_save: ['lm_head'] });
    await refused(validateAdapterFiles(d, limits), 'unsupported_adapter', /modules_to_save/);
  });
  it('a rank over the deployment limit', async () => {
    await refused(
      validateAdapterFiles(files('lora_qkvo_r16_rslora'), { ...limits, maxRank: 8 }),
      'unsupported_adapter',
      /rank 16/,
    );
  });
  it('files over the size limit', async () => {
    await refused(validateAdapterFiles(files(), { ...limits, maxBytes: 1000 }), 'too_large', /above the limit/);
  });
  it('a truncated safetensors', async () => {
    const d = files();
    const st = readFileSync(join(d, 'adapter_model.safetensors'));
    writeFileSync(join(d, 'adapter_model.safetensors'), st.subarray(0, st.length - 100));
    await refused(validateAdapterFiles(d, limits), 'invalid_weights', /adapter_model.safetensors/);
  });
  it('a corrupt safetensors header', async () => {
    const d = files();
    const st = readFileSync(join(d, 'adapter_model.safetensors'));
    st.fill(0x7b, 8, 40);
    writeFileSync(join(d, 'adapter_model.safetensors'), st);
    await refused(validateAdapterFiles(d, limits), 'invalid_weights', /adapter_model.safetensors/);
  });
  it('wrong shapes', async () => {
    const d = files('lora_qv_r4');
    const f32 = (n: number): Uint8Array => new Uint8Array(new Float32Array(n).buffer);
    const bad = { dtype: 'F32' as const, shape: [4, 65], data: f32(4 * 65) };
    const tensors: Record<string, typeof bad> = {};
    for (const l of [0, 1])
      for (const p of ['q_proj', 'v_proj']) {
        tensors[`base_model.model.model.layers.${l}.self_attn.${p}.lora_A.weight`] = bad;
        tensors[`base_model.model.model.layers.${l}.self_attn.${p}.lora_B.weight`] = {
          dtype: 'F32',
          shape: [p === 'q_proj' ? 64 : 32, 4],
          data: f32((p === 'q_proj' ? 64 : 32) * 4),
        };
      }
    writeFileSync(join(d, 'adapter_model.safetensors'), encodeSafetensors(tensors));
    await refused(validateAdapterFiles(d, limits), 'incompatible_adapter', /shape \[4, 65\]/);
  });
  it('a different base model (other dimensions)', async () => {
    const other = { ...modelConfig('llama'), hidden_size: 128, intermediate_size: 256, num_attention_heads: 8 };
    await refused(validateAdapterFiles(files(), { ...limits, modelConfig: other }), 'incompatible_adapter', /expected/);
  });
  it('a different base model (fewer layers)', async () => {
    await refused(
      validateAdapterFiles(files(), { ...limits, modelConfig: { ...modelConfig('llama'), num_hidden_layers: 1 } }),
      'incompatible_adapter',
      /layers/,
    );
  });
  it('both weight formats at once', async () => {
    const d = files();
    writeFileSync(join(d, 'adapter_model.bin'), 'x');
    await refused(validateAdapterFiles(d, limits), 'invalid_weights', /both/);
  });
});
