import { describe, expect, it } from 'vitest';
import {
  chatRequest,
  completionRequest,
  describeIssues,
  heartbeat,
  JsonBodyError,
  LORAX_MAX_BEST_OF,
  loraxRequest,
  MAX_PROMPTS,
  parseJsonText,
  requestedFormat,
} from '../src/index.js';

describe('request bodies', () => {
  it('refuses unknown fields, naming them and the first as param', () => {
    const r = completionRequest.safeParse({ prompt: 'x', bogus: 1 });
    expect(r.success).toBe(false);
    expect(describeIssues(r.error!.issues)).toEqual({
      message: "body: unknown or unsupported field(s) 'bogus'",
      param: 'bogus',
    });
  });

  it('accepts what lorax-client sends (every parameter, mostly null) and refuses non-neutral no-ops', () => {
    expect(
      loraxRequest.safeParse({
        inputs: 'x',
        parameters: { best_of: null, watermark: false, details: true, decoder_input_details: null },
      }).success,
    ).toBe(true);
    // best_of is served since issue 12 (up to LORAX_MAX_BEST_OF candidates); watermarking is a non-neutral no-op.
    expect(loraxRequest.safeParse({ inputs: 'x', parameters: { best_of: 2 } }).success).toBe(true);
    expect(loraxRequest.safeParse({ inputs: 'x', parameters: { best_of: LORAX_MAX_BEST_OF + 1 } }).success).toBe(false);
    const r = loraxRequest.safeParse({ inputs: 'x', parameters: { watermark: true } });
    expect(describeIssues(r.error!.issues).message).toBe(
      'parameters.watermark: watermark is not supported: generations are never watermarked (only false or null)',
    );
  });

  it('bounds the prompts of one completion request', () => {
    expect(completionRequest.safeParse({ prompt: Array(MAX_PROMPTS).fill('a') }).success).toBe(true);
    expect(completionRequest.safeParse({ prompt: Array(MAX_PROMPTS + 1).fill('a') }).success).toBe(false);
  });

  it('finds the schema of a JSON-mode request', () => {
    const body = chatRequest.parse({
      messages: [{ role: 'user', content: 'hi' }],
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } },
    });
    expect(requestedFormat(body.response_format)).toEqual({
      schema: { type: 'object' },
      param: 'response_format.json_schema.schema',
    });
    expect(requestedFormat({ type: 'json_object' }, 'parameters.response_format')).toEqual({
      schema: undefined,
      param: 'parameters.response_format.schema',
    });
    expect(requestedFormat({ type: 'text' })).toBeUndefined();
  });
});

describe('bounded JSON', () => {
  it('parses within the depth and refuses deeper nesting and infinite numbers', () => {
    expect(parseJsonText('{"a":[1,{"b":"[[["}]}', 3)).toEqual({ a: [1, { b: '[[[' }] });
    expect(() => parseJsonText('[[[[]]]]', 3)).toThrow(JsonBodyError);
    try {
      parseJsonText('{"a":{"b":1e999}}');
      expect.unreachable();
    } catch (e) {
      expect(e).toMatchObject({ code: 'number_out_of_range', param: 'a.b' });
    }
    expect(() => parseJsonText('{')).toThrow(/malformed JSON body/);
  });
});

describe('heartbeat', () => {
  const beat = {
    id: 'w-1',
    url: 'http://127.0.0.1:8001',
    base_model: 'tiny',
    model_config: {},
    max_lora_rank: 64,
    capacity: { adapter_slots: 4, host_adapters: 8, kv_blocks: 100, max_batch_tokens: 512 },
    load: { running: 0, waiting: 0, kv_free_blocks: 100 },
    draining: false,
  };

  it('accepts a worker heartbeat and drops fields it does not know', () => {
    expect(heartbeat.parse({ ...beat, newer_field: 1 })).toEqual(beat);
  });

  it('refuses a url that is not absolute http(s)', () => {
    const r = heartbeat.safeParse({ ...beat, url: 'file:///etc' });
    expect(r.error?.issues[0]?.message).toBe('url must be an absolute http(s) URL');
  });
});
