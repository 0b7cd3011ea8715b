// Free but bounded whitespace in JSON mode's grammars.
//
// JSON mode keeps the model's own way of writing JSON: between JSON tokens any whitespace is allowed (compact
// `{"a":1}` or spaced `{"a": 1}`, within a bound), so a model fine-tuned on compact JSON writes the same bytes with
// JSON mode on as off whenever its own output is valid. Fixed separators (", " and ": ") forced a compact model
// off its path and it derailed (`{"name": "LFus", "age": 4}` where it wrote `{"name":"Linus","age":54}`).
//
// Free whitespace must stay bounded, or a model could pad forever. xgrammar 0.1.27's any-whitespace mode writes
// whitespace as `[ \n\t]*`; its maxWhitespaceCnt option bounds it only in the schema's own rules, not in the
// built-in rules for any value (`basic_array`, `basic_object`: a json_object format is nothing else), and it
// unrolls the bound at every gap (the grammar grows by that many rules per gap). So the grammar is taken as
// text (xgrammar's own conversion, printed) and every `[ \n\t]*` is replaced in place by `[ \n\t]{0,N}` (N =
// MAX_WHITESPACE), the form maxWhitespaceCnt itself writes; the text is then parsed and compiled. After N
// whitespace characters in a gap the model must write JSON, so an output's whitespace is bounded by its
// structure (and max_tokens).
//
// Why N is 1: one character covers compact JSON, json.dumps' ", " / ": " and `{ "a" : 1 }`; it does not cover
// pretty-printing (a newline and an indent). A larger N costs twice:
// - a model that puts little weight on whitespace (a random-weight test model, or a model off its training
//   distribution) spends up to N characters at every gap: with N = 2 to 16 the random-weight outputs of the
//   JSON-mode tests no longer fit their token budget;
// - xgrammar unrolls {0,N} into N rules at every gap: a schema of 1,000 properties compiled in 1.4 s with fixed
//   separators, 3.3 s with unbounded whitespace, 9 s with N = 1 (CPU, tiny Llama vocabulary), more with larger N.
// One rule shared by every gap would keep the size independent of N, but xgrammar 0.1.27 matches such a shared
// rule wrongly (it let `["a" "b"]` through without the comma, and an integer outside its enum).

import type { XgGrammar, Xgrammar } from './xgrammar.js';

/** Whitespace characters allowed in one gap between JSON tokens. */
export const MAX_WHITESPACE = 1;

/** How xgrammar's printed grammar writes unbounded whitespace in any-whitespace mode. */
const FREE_WHITESPACE = '[ \\n\\t]*';

/**
 * `ebnf` (a grammar printed by xgrammar) with every unbounded whitespace run allowed at most `max` characters.
 * Quoted literals and character classes are copied as they are (an enum value may hold the same characters). A
 * user's pattern that xgrammar printed as the same run is bounded too: it then accepts a subset, so outputs
 * still match it.
 */
export function boundWhitespace(ebnf: string, max: number = MAX_WHITESPACE): string {
  if (!Number.isInteger(max) || max < 1) throw new RangeError(`max whitespace must be a positive integer, not ${max}`);
  const bounded = `[ \\n\\t]{0,${max}}`;
  let out = '';
  let from = 0; // ebnf[from, i) is still to copy
  for (let i = 0; i < ebnf.length;) {
    if (ebnf.startsWith(FREE_WHITESPACE, i)) {
      out += ebnf.slice(from, i) + bounded;
      i += FREE_WHITESPACE.length;
      from = i;
      continue;
    }
    const close = ebnf[i] === '"' ? '"' : ebnf[i] === '[' ? ']' : undefined;
    if (!close) {
      i++;
      continue;
    }
    let j = i + 1; // to the end of the literal or class, past escapes
    while (j < ebnf.length && ebnf[j] !== close) j += ebnf[j] === '\\' ? 2 : 1;
    i = j + 1;
  }
  return out + ebnf.slice(from);
}

/**
 * The grammar of a JSON schema (`strict`: no properties or items beyond those declared) with free, bounded
 * whitespace between JSON tokens: xgrammar's any-whitespace conversion, printed, bounded, parsed back.
 */
export async function jsonGrammar(
  xg: Pick<Xgrammar, 'Grammar'>,
  schemaJson: string,
  strict: boolean,
): Promise<XgGrammar> {
  const converted = await xg.Grammar.fromJSONSchema(schemaJson, true, -1, undefined, strict);
  let text: string;
  try {
    text = converted.toString();
  } finally {
    converted.dispose();
  }
  return xg.Grammar.fromEBNF(boundWhitespace(text), 'root');
}
