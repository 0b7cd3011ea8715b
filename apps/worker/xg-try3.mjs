import { loadXgrammar } from './dist/structured/xgrammar.js';
import { readVocabInfo } from './dist/structured/tokenizer-info.js';
const xg = loadXgrammar();
const vi = await readVocabInfo('../../packages/engine/test/fixtures/hf-tiny/llama/base', 512);
console.log(vi.vocabType, vi.prependSpace, vi.encodedVocab.slice(250, 270));
const ti = await xg.TokenizerInfo.createTokenizerInfo(vi.encodedVocab, vi.vocabType, vi.prependSpace, 512, [2]);
const comp = await xg.GrammarCompiler.createGrammarCompiler(ti);
const { Tokenizer } = await import('../../packages/engine/node_modules/tokenizers/index.js');
const tk = Tokenizer.fromFile('../../packages/engine/test/fixtures/hf-tiny/llama/base/tokenizer.json');
for (const term of [false, true]) {
  const cg = await comp.compileJSONSchema(JSON.stringify({type:'object',properties:{a:{type:'integer'}, s:{type:'string', maxLength: 3}},required:['a','s']}), false, -1, [', ', ': ']);
  const m = await xg.GrammarMatcher.createGrammarMatcher(cg, undefined, term);
  const ids = (await tk.encode('{"a": 12, "s": "xy"}', null, { addSpecialTokens: false })).getIds();
  for (const id of ids) { const ok = m.acceptToken(id); if (!ok) console.log('rejected', id); }
  const mask = new Uint32Array((await m.getNextTokenBitmask()).buffer);
  const allowed = []; for (let t = 0; t < 512; t++) if ((mask[t>>5] >>> (t&31)) & 1) allowed.push(t);
  console.log('term', term, 'isTerminated', m.isTerminated(), 'allowed after }', allowed);
}
const cg2 = await comp.compileJSONSchema(JSON.stringify({type:'object',properties:{n:{type:'number', minimum: 0, maximum: 10}, i:{type:'integer', minimum: -5, maximum: 99}, arr: {type:'array', items:{type:'boolean'}, minItems: 1, maxItems: 2}},required:['n','i','arr']}), false, -1, [', ', ': ']);
console.log('compiled bounds ok');
const t0 = performance.now();
const cg3 = await comp.compileJSONSchema('{"type":"object"}', false, -1, [', ', ': '], false);
console.log('any object', performance.now()-t0);
