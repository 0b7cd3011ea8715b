// The SDK's restated wire types (src/wire.ts) are exactly @loraplex/protocol's: checked by the
// compiler (pnpm typecheck runs tsc over the tests), so the published .d.ts can stand alone.
import type * as P from '@loraplex/protocol';
import { expectTypeOf, it } from 'vitest';
import type * as W from '../src/wire.js';

it("restates the protocol's wire types exactly", () => {
  expectTypeOf<W.OpenAiFinishReason>().toEqualTypeOf<P.OpenAiFinishReason>();
  expectTypeOf<W.LoraxFinishReason>().toEqualTypeOf<P.LoraxFinishReason>();
  expectTypeOf<W.LoraxToken>().toEqualTypeOf<P.LoraxToken>();
  expectTypeOf<W.Scope>().toEqualTypeOf<P.Scope>();
  expectTypeOf<W.WireTenant>().toEqualTypeOf<P.Tenant>();
  expectTypeOf<W.WireApiKey>().toEqualTypeOf<P.ApiKey>();
  expectTypeOf<W.WireAdapter>().toEqualTypeOf<P.Adapter>();
  expectTypeOf<W.WireModel>().toEqualTypeOf<P.Model>();
  expectTypeOf<W.WireUsageRow>().toEqualTypeOf<P.UsageRow>();
  expectTypeOf<W.WireChatRole>().toEqualTypeOf<P.ChatRequest['messages'][number]['role']>();
  expectTypeOf<W.WireOpenAiUsage>().toEqualTypeOf<P.OpenAiUsage>();
  expectTypeOf<W.WireChatChunk>().toEqualTypeOf<P.ChatChunk>();
});
