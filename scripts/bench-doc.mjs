// Writes one benchmark section into docs/benchmarks.md: between `<!-- bench:KEY -->` and
// `<!-- /bench:KEY -->`, replacing an earlier section of the same key, else appended.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** `key` is made safe for the marker (letters, digits, . and -). Returns the key used. */
export function writeBenchSection(docPath, key, body) {
  const safe = key.replace(/[^A-Za-z0-9.-]+/g, '-');
  const section = `<!-- bench:${safe} -->\n${body.trimEnd()}\n<!-- /bench:${safe} -->`;
  let doc = existsSync(docPath) ? readFileSync(docPath, 'utf8') : '# Benchmarks\n';
  const re = new RegExp(`<!-- bench:${safe} -->[\\s\\S]*?<!-- /bench:${safe} -->`);
  doc = re.test(doc) ? doc.replace(re, () => section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(docPath, doc);
  return safe;
}
