// Python `re` patterns from adapter configs (PEFT's target_modules, layers_pattern, rank_pattern /
// alpha_pattern keys), matched with RE2 semantics (re2js): matching takes time linear in the input
// whatever the pattern, so an uploaded config cannot stall the process that validates or loads it
// (a backtracking engine spends exponential time on patterns such as `(a+)+$`). RE2's syntax is
// Python's for everything PEFT configs use (groups, classes, alternation, `(?P<name>...)`,
// repetition); what RE2 cannot express in linear time (backreferences, lookaround) is refused.
import { RE2JS, RE2JSException } from 're2js';

/**
 * Limits on a pattern, checked before compiling it: compiling is not sliced, and its cost grows
 * with the length and the repetitions (measured: 1 KB of nested repetitions compiles in ~100 ms,
 * 8 KB of character classes in ~300 ms). Real PEFT patterns are a few hundred characters with a
 * handful of repetitions.
 */
export const MAX_PATTERN_CHARS = 1024;
export const MAX_PATTERN_REPEATS = 32;

/** Repetition operators (* + ? {n,m}) outside character classes and escapes. */
function countRepeats(source: string): number {
  let n = 0;
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '*' || c === '+' || c === '?' || c === '{') n++;
  }
  return n;
}

export interface PyRegex {
  /** Python `re.fullmatch(pattern, s) is not None`. */
  fullmatch(s: string): boolean;
  /** Python `re.match(pattern, s)`: the groups of a match anchored at the start, or null. */
  match(s: string): Array<string | null> | null;
}

/**
 * Compiles `source` (Python `re` syntax) with RE2. `refuse` builds the error thrown for a pattern
 * that is too long, malformed, or needs a feature RE2 does not have; `what` names the field.
 */
export function compilePyRegex(source: string, what: string, refuse: (message: string) => Error): PyRegex {
  if (source.length > MAX_PATTERN_CHARS)
    throw refuse(
      `${what} is a regular expression of ${source.length} characters, more than the ${MAX_PATTERN_CHARS} allowed`,
    );
  const repeats = countRepeats(source);
  if (repeats > MAX_PATTERN_REPEATS)
    throw refuse(
      `${what} has ${repeats} repetition operators (* + ? {}), more than the ${MAX_PATTERN_REPEATS} allowed`,
    );
  let re: RE2JS;
  try {
    re = RE2JS.compile(source);
  } catch (e) {
    const detail = e instanceof RE2JSException ? e.message.replace(/^error parsing regexp: /, '') : String(e);
    throw refuse(
      `${what} ${JSON.stringify(source)} is not a regular expression this server can run (${detail}); patterns are matched with RE2 syntax in linear time, ` +
        'which has no backreferences, lookahead or lookbehind',
    );
  }
  return {
    fullmatch: (s) => re.matcher(s).matches(),
    match: (s) => {
      const m = re.matcher(s);
      if (!m.lookingAt()) return null;
      const groups: Array<string | null> = [];
      for (let g = 0; g <= m.groupCount(); g++) groups.push(m.group(g));
      return groups;
    },
  };
}
