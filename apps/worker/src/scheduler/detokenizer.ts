// Incremental detokenisation (the offset-window method of text-generation-inference and vLLM).
// A token may end in the middle of a UTF-8 character (byte-level BPE, byte-fallback), or a
// tokenizer's decoder may drop a leading space of a lone token. So each new token is decoded
// together with the tokens before it: text = decode(tokens[prefix:]) minus decode(tokens[prefix:read]),
// and the delta is released only once it no longer ends in U+FFFD (an incomplete character).
// Concatenating every delta (plus flush()) gives exactly decode(all tokens).

export interface Decoder {
  decode(ids: number[], skipSpecialTokens?: boolean): Promise<string>;
}

export class IncrementalDetokenizer {
  private readonly tokens: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly decoder: Decoder) {}

  /** Adds one token; resolves to the newly stable text ('' while a character is incomplete). */
  async push(token: number): Promise<string> {
    this.tokens.push(token);
    return this.step(false);
  }

  /** Releases whatever is held back (at the end of the sequence), incomplete characters included. */
  async flush(): Promise<string> {
    if (this.readOffset === this.tokens.length) return '';
    return this.step(true);
  }

  private async step(final: boolean): Promise<string> {
    const [prefixText, fullText] = await Promise.all([
      this.decoder.decode(this.tokens.slice(this.prefixOffset, this.readOffset)),
      this.decoder.decode(this.tokens.slice(this.prefixOffset)),
    ]);
    if (!final && (fullText.length <= prefixText.length || fullText.endsWith('\uFFFD'))) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.tokens.length;
    return fullText.slice(prefixText.length);
  }
}
