// Free but bounded whitespace in JSON mode's grammars.
//
// JSON mode keeps the model's own way of writing JSON: between JSON tokens any whitespace is allowed (compact
// `{"a":1}`, spaced `{"a": 1}`, pretty-printed), so a model fine-tuned on compact JSON writes the same bytes with
// JSON mode on as off whenever its own output is valid. Fixed separators (", " and ": ") forced a compact model
// off its path and it derailed (`{"name": "LFus", "age": 4}` where it wrote `{"name":"Linus","age":54}`).
//
// Free whitespace must stay bounded, or a model could pad forever. xgrammar 0.1.27's any-whitespace mode writes
// whitespace as `[ \n\t]*`; its maxWhitespaceCnt option bounds it only in the schema's own rules, not in the
// built-in rules for any value (`basic_array`, `basic_object`: a json_object format is nothing else), and it
// unrolls the bound at every gap (the grammar grows by that many rules per gap). So the grammar is taken as
// text (xgrammar's own conversion, printed) and every `[ \n\t]*` is replaced by one shared rule allowing at most
// MAX_WHITESPACE characters; the text is then parsed and compiled. After MAX_WHITESPACE whitespace characters in
// a gap the model must write JSON, so an output's whitespace is bounded by its structure (and max_tokens).

/** Whitespace characters allowed in one gap between JSON tokens (a newline and indentation to depth 7 by 2). */
export const MAX_WHITESPACE = 16;

/** How xgrammar's printed grammar writes unbounded whitespace in any-whitespace mode. */
const FREE_WHITESPACE = '[ \\n\\t]*';

/**
 * `ebnf` (a grammar printed by xgrammar, root rule `root`) with every unbounded whitespace run allowed at most
 * `max` characters, through one added rule (named so it clashes with no rule of the grammar). Quoted literals
 * and character classes are copied as they are (an enum value may hold the same characters). A user's pattern
 * that xgrammar printed as the same run is bounded too: it then accepts a subset, so outputs still match it.
 */
export function boundWhitespace(ebnf: string, max: number = MAX_WHITESPACE): string {
  if (!Number.isInteger(max) || max < 0) throw new RangeError(`max whitespace must be a non-negative integer, not ${max}`);
  let name = 'json_ws';
  while (new RegExp(`(^|\\W)${name}(\\W|$)`).test(ebnf)) name += '_';
  let out = '';
  for (let i = 0; i < ebnf.length; ) {
    if (ebnf.startsWith(FREE_WHITESPACE, i)) {
      out += name;
      i += FREE_WHITESPACE.length;
      continue;
    }
    const c = ebnf[i]!;
    const close = c === '"' ? '"' : c === '[' ? ']' : undefined;
    if (!close) {
      out += c;
      i++;
      continue;
    }
    let j = i + 1; // to the end of the literal or class, past escapes
    while (j < ebnf.length && ebnf[j] !== close) j += ebnf[j] === '\\' ? 2 : 1;
    out += ebnf.slice(i, j + 1);
    i = j + 1;
  }
  return `${out}\n${name} ::= ${max === 0 ? '""' : `[ \\n\\t]{0,${max}}`}\n`;
}
