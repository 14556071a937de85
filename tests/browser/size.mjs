// Prints the size of halley.js: raw, minified (esbuild) and minified+gzipped (level 9).
//   npm run size
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { transformSync } from 'esbuild';
import { REPO } from './lib/halley.mjs';

export const CLIENT_PATH = path.join(REPO, 'crates', 'halley-server', 'web', 'halley.js');

export function measure() {
  const source = fs.readFileSync(CLIENT_PATH, 'utf8');
  const { code } = transformSync(source, { minify: true, format: 'esm', target: 'es2022' });
  const gzipped = zlib.gzipSync(code, { level: 9 });
  return { raw: Buffer.byteLength(source), minified: Buffer.byteLength(code), gzipped: gzipped.length };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { raw, minified, gzipped } = measure();
  console.log(`halley.js: ${raw} bytes, ${minified} minified, ${gzipped} minified+gzipped (-9)`);
}
