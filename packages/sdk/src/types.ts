// Request and response types of the SDK. The wire shapes are @loraplex/protocol's (docs/platform-contract.md
// §3), restated in ./wire.ts so the published package stands alone; the SDK's own camelCase options and
// results are declared here.
import type {
  LoraxFinishReason,
  LoraxToken,
  OpenAiFinishReason,
  WireAdapter,
  WireApiKey,
  WireChatChunk,
  WireChatRole,
  WireModel,
  WireTenant,
  WireUsageRow,
} from './wire.js';

/** A JSON Schema object (draft 2020-12 subset that the server's grammar compiler accepts). */
export type JsonSchema = Record<string, unknown>;

/** LoRAX's response_format, with the schema as an object. */
export interface ResponseFormat {
  type: 'json_object';
  schema?: JsonSchema;
}

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

export type FinishReason = LoraxFinishReason;

/** A token as the SDK reports it (LoRAX's `skipped` is always false here and left out). */
export type TokenDetail = Omit<LoraxToken, 'skipped'>;

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

export type StreamToken = Omit<LoraxToken, 'skipped'>;

export interface StreamEvent {
  token: StreamToken;
  /** Set on the last event: the whole text and the final details. */
  final?: GenerateResult;
}

export interface ChatMessage {
  role: Exclude<WireChatRole, 'developer'>;
  content: string;
}

export interface ChatOptions extends SamplingOptions {
  responseFormat?: ResponseFormat;
}

export interface ChatResult {
  message: ChatMessage;
  finishReason: OpenAiFinishReason;
  promptTokens: number;
  completionTokens: number;
}

export type Adapter = WireAdapter;

/** A model as /v1/models lists it (the API's fields; a worker's list leaves some out). */
export type Model = Pick<WireModel, 'id' | 'object'> &
  Partial<Pick<WireModel, 'created' | 'owned_by'>> & { root?: string | null; parent?: string | null };

export type UsageRow = WireUsageRow;

type WireChatChoice = WireChatChunk['choices'][number];

/** One event of `chatStream`: the text a chunk adds; the finish reason, then usage, on the last ones. */
export interface ChatStreamEvent {
  /** The new text ('' on the role-only first chunk and on the usage event). */
  delta: NonNullable<WireChatChoice['delta']['content']>;
  /** Set on the chunk that ends the answer. */
  finishReason?: NonNullable<WireChatChoice['finish_reason']>;
  /** Set on the last event: the token counts of the whole exchange. */
  usage?: { promptTokens: number; completionTokens: number };
}

/** A key as listed (with revoked_at, last_used_at) or as created (with the secret `key`, shown once). */
export type ApiKey = Omit<WireApiKey, 'revoked_at' | 'last_used_at'> &
  Partial<Pick<WireApiKey, 'revoked_at' | 'last_used_at'>> & { key?: string };

export type Tenant = WireTenant;
