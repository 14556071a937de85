// The chat demo at `/` in Debian's Chromium, against a real `halley serve`:
// two people (two browser contexts, so two cookie jars) join a room and talk;
// one goes offline and comes back; one stays away longer than its session
// lives; one closes the tab. Presence must follow every time, and no page
// may log a console error. Screenshots of both pages go to artifacts/.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { REPO, startHalley } from './lib/halley.mjs';
import { launch, openPage, screenshot } from './lib/browser.mjs';

// Sessions expire 3 s after their socket goes quiet, so the "away too long"
// case takes seconds, not the default 10.
const MAX_INTERVAL = 3000;
const WAIT = { timeout: 15000 };

let halley;
let browser;
const pages = [];

async function open(viewport) {
  const page = await openPage(browser, `${halley.base}/`, viewport);
  pages.push(page);
  await waitState(page, 'connected');
  return page;
}

async function join(page, name, room = 'lobby') {
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join');
  await page.locator('#chat').waitFor({ state: 'visible', ...WAIT });
}

async function send(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

async function waitMessage(page, text) {
  await page.locator('#messages .bubble', { hasText: text }).waitFor(WAIT);
}

async function waitState(page, state) {
  await page.locator(`#status[data-state="${state}"]`).waitFor(WAIT);
}

async function waitMembers(page, names) {
  const expected = [...names].sort().join(', ');
  await page.waitForFunction(
    (want) => [...document.querySelectorAll('#members li .name')]
      .map((e) => e.textContent).sort().join(', ') === want,
    expected, WAIT,
  ).catch(async (error) => {
    const got = await page.$$eval('#members li .name', (els) => els.map((e) => e.textContent));
    throw new Error(`members: expected [${expected}], got [${got.join(', ')}]: ${error.message}`);
  });
}

async function goOffline(page) {
  // Requests are blocked and the browser reports itself offline (which
  // also fires the page's "offline" event).
  await page.context().route('**/*', (route) => route.abort('internetdisconnected'));
  await page.context().setOffline(true);
}

async function goOnline(page) {
  await page.context().unroute('**/*');
  await page.context().setOffline(false);
}

function clientId(page) {
  return page.evaluate(() => window.halleyDemo.client.clientId);
}

function assertNoConsoleErrors() {
  for (const page of pages) assert.deepEqual(page.consoleErrors, [], 'console errors');
}

describe('chat demo in Chromium', () => {
  before(async () => {
    halley = await startHalley(['--max-interval', String(MAX_INTERVAL), '--sweep-period', '250']);
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await halley?.stop();
  });

  let ada;
  let grace;

  it('two pages join one room, see each other and chat both ways over WebSocket', async () => {
    ada = await open({ width: 1280, height: 800 });
    grace = await open({ width: 390, height: 760 });
    assert.equal(await ada.textContent('#transport'), 'websocket');

    await join(ada, 'Ada');
    await waitMembers(ada, ['Ada']);
    await join(grace, 'Grace');
    await waitMembers(ada, ['Ada', 'Grace']);
    await waitMembers(grace, ['Ada', 'Grace']);
    await ada.locator('#messages .sys', { hasText: 'Grace joined' }).waitFor(WAIT);

    await send(ada, 'Hello Grace, this went through Halley.');
    await waitMessage(grace, 'Hello Grace, this went through Halley.');
    await send(grace, 'Hi Ada! Got it at once.');
    await waitMessage(ada, 'Hi Ada! Got it at once.');
    // The sender's own copy is confirmed by the server's broadcast.
    await ada.locator('.msg.mine:not(.pending)', { hasText: 'Hello Grace' }).waitFor(WAIT);
    await ada.waitForFunction(() => /\d+ ms/.test(document.getElementById('rtt').textContent), null, WAIT);

    await screenshot(ada, 'demo-1-ada-laptop');
    await screenshot(grace, 'demo-1-grace-phone');
    assertNoConsoleErrors();
  });

  it('a page that goes offline shows it, then receives what it missed', async () => {
    const session = await clientId(grace);
    await goOffline(grace);
    await waitState(grace, 'offline');
    assert.match(await grace.textContent('#banner'), /offline/i);
    await screenshot(grace, 'demo-2-grace-offline');

    await send(ada, 'Sent while Grace was offline (1)');
    await send(ada, 'Sent while Grace was offline (2)');
    await ada.locator('.msg.mine:not(.pending)', { hasText: '(2)' }).waitFor(WAIT);
    await send(grace, 'Written while offline');
    await grace.locator('.msg.mine.pending', { hasText: 'Written while offline' }).waitFor(WAIT);

    await goOnline(grace);
    await waitState(grace, 'connected');
    await waitMessage(grace, 'Sent while Grace was offline (1)');
    await waitMessage(grace, 'Sent while Grace was offline (2)');
    await waitMessage(ada, 'Written while offline');
    await grace.locator('.msg.mine:not(.pending)', { hasText: 'Written while offline' }).waitFor(WAIT);
    assert.equal(await clientId(grace), session, 'the same session: nothing was lost');
    assert.equal(await grace.locator('#banner').isVisible(), false);
    // Back within its session: the same member, no leave and join.
    assert.equal(await ada.locator('#messages .sys', { hasText: 'Grace lost' }).count(), 0);
    await waitMembers(ada, ['Ada', 'Grace']);
    await screenshot(grace, 'demo-3-grace-back');
    assertNoConsoleErrors();
  });

  it('a page away longer than its session expires from presence, then re-handshakes and rejoins', async () => {
    const session = await clientId(grace);
    await goOffline(grace);
    await waitState(grace, 'offline');
    // The server expires Grace's session: presence tells Ada.
    await ada.locator('#messages .sys', { hasText: 'Grace lost the connection' }).waitFor(WAIT);
    await waitMembers(ada, ['Ada']);
    await screenshot(ada, 'demo-4-ada-grace-expired');

    await goOnline(grace);
    await waitState(grace, 'connected');
    await grace.locator('#messages .sys', { hasText: 'new session' }).waitFor(WAIT);
    assert.notEqual(await clientId(grace), session);
    await waitMembers(ada, ['Ada', 'Grace']);
    await waitMembers(grace, ['Ada', 'Grace']);
    // Subscriptions were renewed: chat works both ways again.
    await send(ada, 'Welcome back, Grace');
    await waitMessage(grace, 'Welcome back, Grace');
    await send(grace, 'Thanks, new session here');
    await waitMessage(ada, 'Thanks, new session here');
    await screenshot(grace, 'demo-5-grace-rehandshaked');
    assertNoConsoleErrors();
  });

  it('closing a page removes its member from the room', async () => {
    assertNoConsoleErrors();
    await grace.close();
    // The page's "pagehide" sends /meta/disconnect: no need to wait for expiry.
    await ada.locator('#messages .sys', { hasText: 'Grace closed the page' }).waitFor(WAIT);
    await waitMembers(ada, ['Ada']);
    await screenshot(ada, 'demo-6-ada-alone');
    assert.deepEqual(ada.consoleErrors, []);
  });

  it('leaving the room goes back to the join form and tells the others', async () => {
    const bob = await open({ width: 1024, height: 700 });
    await join(bob, 'Bob');
    await waitMembers(ada, ['Ada', 'Bob']);
    await bob.click('#leave');
    await bob.locator('#lobby').waitFor({ state: 'visible', ...WAIT });
    await ada.locator('#messages .sys', { hasText: 'Bob left' }).waitFor(WAIT);
    await waitMembers(ada, ['Ada']);
    assert.deepEqual(bob.consoleErrors, []);
    assert.deepEqual(ada.consoleErrors, []);
  });

  it('a server restart shows "reconnecting", then the page re-handshakes and rejoins', async () => {
    const session = await clientId(ada);
    await halley.restart();
    await ada.locator('#messages .sys', { hasText: 'new session' }).waitFor(WAIT);
    await waitState(ada, 'connected');
    assert.notEqual(await clientId(ada), session);
    const states = await ada.evaluate(() => window.halleyDemo.states);
    assert.ok(states.includes('reconnecting'), states.join(' '));
    await waitMembers(ada, ['Ada']);
    await send(ada, 'Still here after the restart');
    await ada.locator('.msg.mine:not(.pending)', { hasText: 'after the restart' }).waitFor(WAIT);
    // While the server was down, Chromium logs the refused connections
    // itself; nothing else may appear.
    const refused = /net::ERR_CONNECTION_REFUSED|WebSocket connection to .* failed/;
    assert.deepEqual(ada.consoleErrors.filter((e) => !refused.test(e)), []);
  });
});

describe('chat demo over long-polling (server without WebSocket)', () => {
  before(async () => {
    halley = await startHalley(['--websocket', 'false']);
    browser = await launch();
    pages.length = 0;
  });

  after(async () => {
    await browser?.close();
    await halley?.stop();
  });

  it('chats both ways and shows long-polling as the transport', async () => {
    const ada = await open({ width: 1280, height: 800 });
    const bob = await open({ width: 1280, height: 800 });
    assert.equal(await ada.textContent('#transport'), 'long-polling');
    await join(ada, 'Ada', 'polling');
    await join(bob, 'Bob', 'polling');
    await waitMembers(ada, ['Ada', 'Bob']);
    await send(bob, 'Hello over long-polling');
    await waitMessage(ada, 'Hello over long-polling');
    await send(ada, 'And back');
    await waitMessage(bob, 'And back');
    await screenshot(ada, 'demo-7-long-polling');
    assertNoConsoleErrors();
  });
});

describe("the README's halley.js example", () => {
  before(async () => {
    halley = await startHalley();
    browser = await launch();
    pages.length = 0;
  });

  after(async () => {
    await browser?.close();
    await halley?.stop();
  });

  it('runs as printed', async () => {
    const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
    const html = /```html\n<script type="module">\n([\s\S]*?)<\/script>\n```/.exec(readme);
    assert.ok(html, 'the example is in the README');
    // Any same-origin page will do; /healthz has no icon, so answer that.
    const page = await openPage(browser, null);
    await page.route('**/favicon.ico', (route) => route.fulfill({ status: 204 }));
    await page.goto(`${halley.base}/healthz`);
    pages.push(page);
    const logs = [];
    page.on('console', (msg) => logs.push(msg.text()));
    await page.addScriptTag({ type: 'module', content: html[1] });
    const deadline = Date.now() + 10000;
    while (!logs.some((l) => l.startsWith('here:')) && Date.now() < deadline) await page.waitForTimeout(50);
    assert.ok(logs.includes('ada says hello'), logs.join('\n'));
    assert.ok(logs.some((l) => /^here: .*ada/.test(l)), logs.join('\n'));
    assert.ok(logs.some((l) => l.startsWith('connection: connected')), logs.join('\n'));
    assertNoConsoleErrors();
  });
});
