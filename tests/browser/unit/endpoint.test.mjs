// The demo's `?endpoint=` (issue 14, finding 11): a path or a URL of the
// page's own origin is used; another server, a protocol-relative URL or a
// `javascript:` one falls back to `/cometd`.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { sameOriginEndpoint } from '../../../crates/halley-server/web/endpoint.js';

const page = 'http://localhost:8080/?endpoint=whatever';

test('a path of this server is used as given', () => {
  assert.equal(sameOriginEndpoint(null, page), '/cometd');
  assert.equal(sameOriginEndpoint('/x/bayeux', page), '/x/bayeux');
  assert.equal(sameOriginEndpoint('/cometd?a=1', page), '/cometd?a=1');
  assert.equal(sameOriginEndpoint('http://localhost:8080/other', page), '/other');
});

test('another server is refused', () => {
  const warn = console.warn;
  console.warn = () => {};
  try {
    for (const other of [
      'https://evil.example/cometd',
      '//evil.example/cometd',
      'http://localhost:9090/cometd',
      'https://localhost:8080/cometd',
      'javascript:alert(1)',
      'data:text/plain,x',
    ]) {
      assert.equal(sameOriginEndpoint(other, page), '/cometd', other);
    }
  } finally {
    console.warn = warn;
  }
});
