// Keeps constrained output valid UTF-8. xgrammar 0.1.27 decodes multi-byte characters leniently: a
// byte-level vocabulary has a token per byte, and its masks let a JSON string contain bytes no UTF-8
// text has (lead bytes C0, C1, F5-FF; surrogates ED A0-BF; overlong forms) — such output decodes
// to U+FFFD, breaking maxLength and the text itself. This filter tracks where the output stands in
// the current character (a UTF-8 DFA state) and, before each draw, clears the tokens whose bytes
// would break UTF-8 from there. The tables are built once per vocabulary: for each of the 8 states
// the set of allowed tokens (a bitmask) and each token's state after it.

// States: 0 between characters; else what the next byte must be and how many more follow.
//   1: 80-BF, last   2: 80-BF, one more   3: A0-BF, one more (after E0)   4: 80-9F, one more (after ED)
//   5: 90-BF, two more (after F0)   6: 80-BF, two more (F1-F3)   7: 80-8F, two more (after F4)
const STATES = 8;

function step(state: number, b: number): number {
  switch (state) {
    case 0:
      if (b < 0x80) return 0;
      if (b >= 0xc2 && b <= 0xdf) return 1;
      if (b === 0xe0) return 3;
      if (b === 0xed) return 4;
      if (b >= 0xe1 && b <= 0xef) return 2;
      if (b === 0xf0) return 5;
      if (b >= 0xf1 && b <= 0xf3) return 6;
      if (b === 0xf4) return 7;
      return -1;
    case 1:
      return b >= 0x80 && b <= 0xbf ? 0 : -1;
    case 2:
      return b >= 0x80 && b <= 0xbf ? 1 : -1;
    case 3:
      return b >= 0xa0 && b <= 0xbf ? 1 : -1;
    case 4:
      return b >= 0x80 && b <= 0x9f ? 1 : -1;
    case 5:
      return b >= 0x90 && b <= 0xbf ? 2 : -1;
    case 6:
      return b >= 0x80 && b <= 0xbf ? 2 : -1;
    case 7:
      return b >= 0x80 && b <= 0x8f ? 2 : -1;
    default:
      return -1;
  }
}

export class Utf8Table {
  /** Allowed-token bitmask per state. */
  private readonly masks: Uint32Array[];
  /** next[token * 8 + state]: the state after the token (-1: invalid). */
  private readonly next: Int8Array;

  constructor(
    tokenBytes: readonly Uint8Array[],
    readonly words: number,
  ) {
    const V = tokenBytes.length;
    this.next = new Int8Array(V * STATES);
    this.masks = Array.from({ length: STATES }, () => new Uint32Array(words));
    for (let t = 0; t < V; t++) {
      const bytes = tokenBytes[t]!;
      for (let s0 = 0; s0 < STATES; s0++) {
        let s = s0;
        for (let i = 0; i < bytes.length && s >= 0; i++) s = step(s, bytes[i]!);
        this.next[t * STATES + s0] = s;
        if (s >= 0 && t < words * 32) this.masks[s0]![t >>> 5]! |= 1 << (t & 31);
      }
    }
  }

  /** Clears from `mask` (in place) the tokens not allowed in `state`; false if none would be left (mask unchanged). */
  restrict(mask: Uint32Array, state: number): boolean {
    const allowed = this.masks[state]!;
    const n = Math.min(mask.length, this.words);
    let any = 0;
    for (let i = 0; i < n; i++) any |= mask[i]! & allowed[i]!;
    if (any === 0) return false;
    for (let i = 0; i < n; i++) mask[i]! &= allowed[i]!;
    return true;
  }

  /** The state after `token` (0 if the token is unknown or breaks UTF-8: start afresh). */
  after(state: number, token: number): number {
    const s = token * STATES + state < this.next.length ? this.next[token * STATES + state]! : 0;
    return s < 0 ? 0 : s;
  }
}
