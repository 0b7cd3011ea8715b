// The wire shapes the SDK's public types expose, written out so that the published package (its
// .d.ts included) needs nothing from @loraplex/protocol. test/wire-types.test.ts checks at compile
// time that each one is exactly the protocol's type, so they cannot drift apart.

export type OpenAiFinishReason = 'stop' | 'length';
export type LoraxFinishReason = 'length' | 'eos_token' | 'stop_sequence';

export interface LoraxToken {
  id: number;
  text: string;
  logprob: number;
  special: boolean;
  skipped: boolean;
}

export type Scope = 'inference' | 'adapters:write' | 'admin';

export interface WireTenant {
  id: string;
  object: 'tenant';
  name: string;
  created_at: string;
}

export interface WireApiKey {
  id: string;
  object: 'api_key';
  prefix: string;
  name: string | null;
  scopes: Scope[];
  tenant_id: string | null;
  created_at: string;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface WireAdapter {
  id: string;
  object: 'adapter';
  name: string;
  version: number;
  ref: string;
  base_model: string;
  rank: number | null;
  alpha: number | null;
  target_modules: string[] | null;
  size_bytes: number | null;
  sha256: string | null;
  status: 'ready' | 'failed' | 'uploading';
  failure_reason: string | null;
  created_at: string;
}

export interface WireModel {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  root: string;
  parent: string | null;
}

export interface WireUsageRow {
  adapter: string | null;
  base_model: string;
  period_start: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  avg_latency_ms: number;
}

export type WireChatRole = 'system' | 'developer' | 'user' | 'assistant';

export interface WireOpenAiUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** One chunk of a streamed /v1/chat/completions answer. */
export interface WireChatChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: number;
    delta: { role?: 'assistant' | undefined; content?: string | undefined };
    logprobs: unknown;
    finish_reason: OpenAiFinishReason | null;
    /** vLLM's extension: the stop string or stop token id that ended the choice (null for eos / length). */
    stop_reason?: string | number | null | undefined;
  }>;
  usage?: WireOpenAiUsage | undefined;
}
