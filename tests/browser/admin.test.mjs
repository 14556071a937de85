// The admin page (served by the admin listener at `/`) in Debian's Chromium,
// against a running node with clients: the figures match what the clients
// do, the tables name the channels, a chart moves with the traffic, and a
// remote adapter that cannot be reached shows up as "0 of 1 connected" with
// its warning in the recent errors. No console error.
//
// ADMIN_SCREENSHOT=1 also writes docs/img/admin-page.png (the picture in
// docs/operations.md); otherwise the screenshot goes to artifacts/.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { REPO, startHalley } from './lib/halley.mjs';
import { launch, openPage, screenshot } from './lib/browser.mjs';

const WAIT = { timeout: 15000 };

let halley;
let browser;
const stop = new AbortController();
const loops = [];

// A port nothing listens on: bound, then released.
async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// A long-polling Bayeux client over fetch, with its own cookie as a
// browser has: handshakes, subscribes, and keeps a /meta/connect open (so
// its deliveries are written) until the test ends.
async function client(subscriptions = []) {
  const url = `${halley.base}/cometd`;
  let cookie = '';
  const send = async (messages) => {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie },
      body: JSON.stringify(messages),
      signal: stop.signal,
    });
    const set = response.headers.getSetCookie().map((c) => c.split(';')[0]);
    if (set.length) cookie = set.join('; ');
    return response.json();
  };
  const [hello] = await send([{ channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['long-polling'] }]);
  assert.equal(hello.successful, true, JSON.stringify(hello));
  const clientId = hello.clientId;
  const connect = () => send([{ channel: '/meta/connect', clientId, connectionType: 'long-polling' }]);
  await connect();
  for (const subscription of subscriptions) {
    const [reply] = await send([{ channel: '/meta/subscribe', clientId, subscription }]);
    assert.equal(reply.successful, true, JSON.stringify(reply));
  }
  loops.push((async () => {
    while (!stop.signal.aborted) await connect().catch(() => {});
  })());
  return {
    publish: (channel, data) => send([{ channel, clientId, data }]),
  };
}

describe('the admin page', () => {
  before(async () => {
    const config = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'halley-admin-')), 'halley.toml');
    fs.writeFileSync(config, `[[remote-adapter]]
name = "prices"
channels = ["/prices/*"]
connect = "127.0.0.1:${await closedPort()}"
`);
    halley = await startHalley(['--config', config]);
    assert.ok(halley.admin, `no admin listener in\n${halley.log}`);
    browser = await launch();
  });

  after(async () => {
    stop.abort();
    await browser?.close();
    await halley?.stop();
    await Promise.allSettled(loops);
  });

  it('shows the node live', async () => {
    for (let n = 0; n < 3; n++) await client(['/stocks/acme']);
    await client(['/stocks/other']);
    const publisher = await client();
    // Publishes at a steady pace while the page watches.
    let ticks = 0;
    const pace = setInterval(() => {
      ticks += 1;
      publisher.publish('/stocks/acme', { price: 100 + (ticks % 7) }).catch(() => {});
      if (ticks % 3 === 0) publisher.publish('/stocks/other', { price: 42 }).catch(() => {});
    }, 50);
    try {
      const page = await openPage(browser, `${halley.admin}/`, { width: 1400, height: 1000 });
      await page.locator('#status.ready').waitFor(WAIT);
      await page.waitForFunction(() => document.getElementById('sessions').textContent === '5', null, WAIT);

      const firstRow = (table) => page.$eval(`#${table} tbody tr`, (tr) => [...tr.cells].map((c) => c.textContent));
      await page.waitForFunction(
        () => document.querySelector('#by-traffic tbody td.channel')?.textContent === '/stocks/acme', null, WAIT);
      assert.deepEqual(await firstRow('by-subscribers'), ['/stocks/acme', '3']);
      const rows = await page.$$eval('#by-subscribers tbody tr', (trs) => trs.map((tr) => tr.cells[0].textContent));
      assert.deepEqual(rows, ['/stocks/acme', '/stocks/other']);

      // Rates: about 20 messages in and 60 + 4 deliveries out per second.
      await page.waitForFunction(() => Number(document.getElementById('messages-in').textContent) > 0, null, WAIT);
      await page.waitForFunction(() => Number(document.getElementById('messages-out').textContent) > 0, null, WAIT);
      await page.waitForFunction(() => /ms$/.test(document.getElementById('p99').textContent), null, WAIT);

      // The messages chart gains a point each second.
      const points = () => page.$eval('#chart-messages polyline', (line) => Number(line.dataset.points));
      const before = await points();
      await page.waitForFunction(
        (n) => Number(document.querySelector('#chart-messages polyline').dataset.points) > n, before, WAIT);

      // The adapter that cannot be reached, and its warning.
      const adapters = await page.$eval('#adapters', (t) => t.textContent);
      assert.match(adapters, /0 of 1 connected \(prices\)/);
      await page.locator('#errors td', { hasText: 'remote adapter unreachable' }).first().waitFor(WAIT);
      assert.equal(await page.$eval('#cluster-card', (c) => c.hidden), true);

      // Let the charts fill a few seconds (half a minute for the docs' picture).
      const seconds = process.env.ADMIN_SCREENSHOT ? 30 : 5;
      await page.waitForFunction(
        (n) => Number(document.querySelector('#chart-latency polyline').dataset.points) >= n,
        seconds, { timeout: (seconds + 15) * 1000 });
      const file = await screenshot(page, 'admin-page');
      if (process.env.ADMIN_SCREENSHOT) {
        const out = path.join(REPO, 'docs', 'img', 'admin-page.png');
        fs.mkdirSync(path.dirname(out), { recursive: true });
        fs.copyFileSync(file, out);
        console.log(`wrote ${out}`);
      }
      assert.deepEqual(page.consoleErrors, []);
    } finally {
      clearInterval(pace);
    }
  });
});
