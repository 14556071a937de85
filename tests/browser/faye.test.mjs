// halley.js in Chromium against Faye's own server (npm `faye`): the client
// speaks plain Bayeux, so it needs nothing from Halley. A small Node server
// serves halley.js and an empty page, with Faye mounted at /faye.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import faye from 'faye';

import { REPO } from './lib/halley.mjs';
import { launch, openPage, screenshot } from './lib/browser.mjs';

const CLIENT = fs.readFileSync(path.join(REPO, 'crates', 'halley-server', 'web', 'halley.js'));
const PAGE = `<!doctype html><meta charset="utf-8"><title>halley.js against Faye</title>
<body style="font: 16px system-ui; padding: 1rem"><h1>halley.js ↔ Faye</h1><ol id="log"></ol>
<script type="module">
  import { Halley } from "/halley.js";
  window.Halley = Halley;
  window.log = (text) => document.getElementById("log").append(Object.assign(document.createElement("li"), { textContent: text }));
  window.loaded = true;
</script>`;

let server;
let adapter;
let base;
let browser;
const pages = [];

/** A page with a halley.js client on /faye, subscribed to /chat/faye. */
async function clientPage(options) {
  const page = await openPage(browser, `${base}/`, { width: 800, height: 500 });
  pages.push(page);
  await page.waitForFunction(() => window.loaded === true);
  await page.evaluate(async (options) => {
    window.received = [];
    window.states = [];
    const client = (window.client = new window.Halley('/faye', options));
    client.on('state', (state) => { window.states.push(state); window.log(`state: ${state}`); });
    await client.subscribe('/chat/faye', (data) => { window.received.push(data.text); window.log(`got: ${data.text}`); });
  }, options);
  return page;
}

async function waitReceived(page, text) {
  await page.waitForFunction((text) => window.received.includes(text), text, { timeout: 15000 });
}

function publish(page, text) {
  return page.evaluate((text) => window.client.publish('/chat/faye', { text }).then((r) => r.successful), text);
}

describe('halley.js against a Faye server', () => {
  before(async () => {
    adapter = new faye.NodeAdapter({ mount: '/faye', timeout: 20 });
    server = http.createServer((req, res) => {
      const type = req.url === '/halley.js' ? 'text/javascript' : 'text/html';
      res.writeHead(200, { 'Content-Type': `${type}; charset=utf-8`, 'Cache-Control': 'no-store' });
      res.end(req.url === '/halley.js' ? CLIENT : PAGE);
    });
    adapter.attach(server);
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${server.address().port}`;
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    adapter?.close();
    server?.closeAllConnections?.();
    await new Promise((resolve) => server?.close(resolve) ?? resolve());
  });

  it('two pages over WebSocket publish and receive both ways', async () => {
    const a = await clientPage({});
    const b = await clientPage({});
    for (const page of [a, b]) {
      assert.equal(await page.evaluate(() => window.client.transport), 'websocket');
      assert.equal(await page.evaluate(() => window.client.state), 'connected');
      assert.equal(await page.evaluate(() => window.client.ackEnabled), false, 'Faye has no ack: inert');
    }
    assert.equal(await publish(a, 'from a'), true);
    assert.equal(await publish(b, 'from b'), true);
    for (const page of [a, b]) {
      await waitReceived(page, 'from a');
      await waitReceived(page, 'from b');
    }
    await screenshot(a, 'faye-websocket');
  });

  it('long-polling only: the same, and batches of publishes', async () => {
    const a = await clientPage({ transports: ['long-polling'] });
    assert.equal(await a.evaluate(() => window.client.transport), 'long-polling');
    await a.evaluate(() => window.client.batch(() => {
      window.client.publish('/chat/faye', { text: 'lp 1' });
      window.client.publish('/chat/faye', { text: 'lp 2' });
    }));
    await waitReceived(a, 'lp 1');
    await waitReceived(a, 'lp 2');
    await waitReceived(pages[0], 'lp 2');
  });

  it('re-handshakes and resubscribes when Faye forgets the client', async () => {
    const [a, b] = pages;
    const old = await a.evaluate(() => window.client.clientId);
    await new Promise((resolve) => adapter._server._engine.destroyClient(old, resolve));
    await a.waitForFunction((old) => window.client.clientId && window.client.clientId !== old
      && window.client.state === 'connected', old, { timeout: 15000 });
    await publish(b, 'after the new handshake');
    await waitReceived(a, 'after the new handshake');
  });

  it('no console errors', () => {
    for (const page of pages) assert.deepEqual(page.consoleErrors, []);
  });
});
