// Request and response types of the SDK (the wire shapes are in docs/platform-contract.md §3).

/** A JSON Schema object (draft 2020-12 subset that the server's grammar compiler accepts). */
export type JsonSchema = Record<string, unknown>;

export type ResponseFormat = { type: 'json_object'; schema?: JsonSchema };

export interface SamplingOptions {
  /** An adapter ref: `name`, `name@version` or an adapter id; omitted = the base model. */
  adapterId?: string;
  maxNewTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  stop?: string[];
  repetitionPenalty?: number;
  /** Return per-token ids, texts and log-probabilities. */
  details?: boolean;
  signal?: AbortSignal;
  /** Milliseconds; overrides the client's timeout. */
  timeout?: number;
}

export interface GenerateOptions extends SamplingOptions {
  responseFormat?: ResponseFormat;
}

export type FinishReason = 'length' | 'eos_token' | 'stop_sequence';

export interface TokenDetail { id: number; text: string; logprob: number | null; special: boolean }

export interface GenerateResult {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  generatedTokens: number;
  /** Per-token details when `details: true`. */
  tokens?: TokenDetail[];
  seed?: number | null;
}

export type JsonResult<T> = GenerateResult & { parsed: T };

export interface StreamToken { id: number; text: string; logprob: number | null; special: boolean }

export interface StreamEvent {
  token: StreamToken;
  /** Set on the last event: the whole text and the final details. */
  final?: GenerateResult;
}

export interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string }

export interface ChatOptions extends SamplingOptions {
  responseFormat?: ResponseFormat;
}

export interface ChatResult {
  message: ChatMessage;
  finishReason: string;
  promptTokens: number;
  completionTokens: number;
}

export interface Adapter {
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

export interface Model { id: string; object: 'model'; created?: number; owned_by?: string; root?: string | null; parent?: string | null }

export interface UsageRow { adapter: string | null; period_start: string; requests: number; prompt_tokens: number; completion_tokens: number; avg_latency_ms: number }

export interface ApiKey { id: string; object: 'api_key'; key?: string; prefix: string; name: string | null; scopes: string[]; tenant_id: string | null; created_at: string; revoked_at?: string | null; last_used_at?: string | null }

export interface Tenant { id: string; object: 'tenant'; name: string; created_at: string }
