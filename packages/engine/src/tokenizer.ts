// Text <-> token ids through Hugging Face's `tokenizers` bindings, and chat prompts through the
// model's Jinja chat template (@huggingface/jinja), as transformers' apply_chat_template renders them.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from 'tokenizers';
import { EngineError } from './errors.js';

export interface ChatMessage {
  role: string;
  content: string;
}

function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string')
    return (v as { content: string }).content;
  return undefined;
}

export class TextTokenizer {
  private constructor(
    private readonly tk: Tokenizer,
    readonly chatTemplate: string | undefined,
    readonly bosToken: string | undefined,
    readonly eosToken: string | undefined,
    private readonly compiled: Template | undefined,
  ) {}

  static async fromDir(dir: string): Promise<TextTokenizer | undefined> {
    const path = join(dir, 'tokenizer.json');
    try {
      await stat(path);
    } catch {
      return undefined;
    }
    let tk: Tokenizer;
    try {
      tk = Tokenizer.fromFile(path);
    } catch (e) {
      throw new EngineError('TOKENIZER', `${path}: ${(e as Error).message}`);
    }
    let cfg: Record<string, unknown> = {};
    try {
      cfg = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new EngineError('TOKENIZER', `tokenizer_config.json: ${(e as Error).message}`);
    }
    let template = cfg.chat_template;
    if (Array.isArray(template))
      template = (template as Array<{ name?: string; template?: string }>).find((t) => t.name === 'default')?.template;
    const chatTemplate = typeof template === 'string' ? template : undefined;
    let compiled: Template | undefined;
    if (chatTemplate) {
      try {
        compiled = new Template(chatTemplate);
      } catch (e) {
        throw new EngineError('TOKENIZER', `chat_template does not parse: ${(e as Error).message}`);
      }
    }
    return new TextTokenizer(tk, chatTemplate, tokenText(cfg.bos_token), tokenText(cfg.eos_token), compiled);
  }

  private longestToken: number | undefined;

  /**
   * Characters in the longest token of the vocabulary (added tokens included): no token covers more
   * of a text, which bounds from below how many tokens a text needs without tokenizing it.
   */
  get maxTokenChars(): number {
    if (this.longestToken === undefined) {
      let longest = 1;
      for (const t of Object.keys(this.tk.getVocab(true))) longest = Math.max(longest, t.length);
      this.longestToken = longest;
    }
    return this.longestToken;
  }

  /** Token id of a token string (e.g. the tokenizer_config eos_token), if it is in the vocabulary. */
  tokenId(token: string): number | undefined {
    const id = this.tk.tokenToId(token);
    return id === null || id === undefined ? undefined : id;
  }

  async encode(text: string, addSpecialTokens = true): Promise<number[]> {
    const enc = await this.tk.encode(text, null, { addSpecialTokens });
    return enc.getIds();
  }

  /** Ids with each token's [start, end) offsets in `text` (as the tokenizers binding reports them). */
  async encodeWithOffsets(
    text: string,
    addSpecialTokens = true,
  ): Promise<{ ids: number[]; offsets: Array<[number, number]> }> {
    const enc = await this.tk.encode(text, null, { addSpecialTokens });
    return { ids: enc.getIds(), offsets: enc.getOffsets().map((o) => [o[0] ?? 0, o[1] ?? 0] as [number, number]) };
  }

  async decode(ids: number[], skipSpecialTokens = true): Promise<string> {
    if (ids.length === 0) return '';
    return this.tk.decode(ids, skipSpecialTokens);
  }

  /** Renders messages with the chat template (add_generation_prompt appends the assistant turn). */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean; template?: string } = {}): string {
    const tmpl = opts.template ? new Template(opts.template) : this.compiled;
    if (!tmpl) throw new EngineError('TOKENIZER', 'the model has no chat_template in tokenizer_config.json');
    try {
      return tmpl.render({
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
        bos_token: this.bosToken ?? '',
        eos_token: this.eosToken ?? '',
      });
    } catch (e) {
      throw new EngineError('TOKENIZER', `chat template failed: ${(e as Error).message}`);
    }
  }
}
