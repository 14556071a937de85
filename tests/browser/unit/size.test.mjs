// halley.js stays small: a budget on its minified+gzipped size.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { measure } from '../size.mjs';

const BUDGET = 6 * 1024;

test(`halley.js is at most ${BUDGET} bytes minified and gzipped`, (t) => {
  const { raw, minified, gzipped } = measure();
  t.diagnostic(`${raw} bytes, ${minified} minified, ${gzipped} minified+gzipped`);
  assert.ok(gzipped <= BUDGET, `${gzipped} bytes`);
});
