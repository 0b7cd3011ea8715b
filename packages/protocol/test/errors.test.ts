import { describe, expect, it } from 'vitest';
import {
  loraxError,
  loraxErrorEnvelope,
  loraxErrorType,
  openAiError,
  openAiErrorEnvelope,
  apiError,
} from '../src/index.js';

describe('error envelopes', () => {
  it("builds the worker's OpenAI error: code = status, param named or null", () => {
    const e = openAiError(400, 'invalid_request_error', 'temperature: too big', 'temperature');
    expect(JSON.stringify(e)).toBe(
      '{"error":{"message":"temperature: too big","type":"invalid_request_error","param":"temperature","code":400}}',
    );
    expect(openAiErrorEnvelope.safeParse(e).success).toBe(true);
  });

  it("builds LoRAX's {error, error_type} with LoRAX's types by status", () => {
    expect(loraxError(422, 'invalid_request_error', 'bad')).toEqual({ error: 'bad', error_type: 'validation' });
    expect(loraxErrorType(400, 'x')).toBe('validation');
    expect(loraxErrorType(424, 'x')).toBe('generation');
    expect(loraxErrorType(500, 'x')).toBe('generation');
    expect(loraxErrorType(429, 'x')).toBe('overloaded');
    expect(loraxErrorType(503, 'x')).toBe('overloaded');
    expect(loraxErrorType(404, 'not_found_error')).toBe('not_found_error');
    expect(loraxErrorEnvelope.safeParse(loraxError(404, 'not_found_error', 'no')).success).toBe(true);
  });

  it("accepts the API's error (string code, no param) as an OpenAI envelope too", () => {
    const body = { error: { message: 'no route', type: 'not_found_error', code: 'not_found' } };
    expect(apiError.safeParse(body).success).toBe(true);
    expect(openAiErrorEnvelope.safeParse(body).success).toBe(true);
    expect(openAiErrorEnvelope.safeParse({ error: 'plain' }).success).toBe(false);
  });
});
