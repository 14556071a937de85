// Regenerates docs/demo.png, the README's picture of the demo: two people
// chatting, one on a laptop-sized window and one on a phone-sized one.
//   npm run screenshot          (needs target/release/halley and Chromium)
import fs from 'node:fs';
import path from 'node:path';
import { REPO, startHalley } from './lib/halley.mjs';
import { launch, openPage } from './lib/browser.mjs';

const OUT = path.join(REPO, 'docs', 'demo.png');
const halley = await startHalley();
const browser = await launch();
try {
  const ada = await openPage(browser, `${halley.base}/`, { width: 1100, height: 720 });
  const grace = await openPage(browser, `${halley.base}/`, { width: 390, height: 720 });
  for (const [page, name] of [[ada, 'Ada'], [grace, 'Grace']]) {
    await page.locator('#status[data-state="connected"]').waitFor();
    await page.fill('#name', name);
    await page.click('#join');
    await page.locator('#chat').waitFor();
  }
  const say = async (page, other, text) => {
    await page.fill('#text', text);
    await page.press('#text', 'Enter');
    await other.locator('#messages .bubble', { hasText: text }).waitFor();
  };
  await say(ada, grace, 'Hi Grace! This page talks to Halley over a WebSocket.');
  await say(grace, ada, 'Hello Ada. Your message arrived in a few milliseconds.');
  await say(ada, grace, 'Close your tab and I will see you leave the room.');
  await say(grace, ada, 'Presence follows the Bayeux session. Nice!');
  await ada.waitForTimeout(1500); // let the rtt and msg/s panel fill in
  const shots = [await ada.screenshot(), await grace.screenshot()].map((b) => b.toString('base64'));
  const board = await openPage(browser, null, { width: 1100 + 390 + 3 * 28, height: 720 + 2 * 28 });
  await board.setContent(`<body style="margin:0;padding:28px;display:flex;gap:28px;background:#cbd2dd">
    ${shots.map((s) => `<img style="border-radius:10px;box-shadow:0 6px 24px rgb(0 0 0/.25)" src="data:image/png;base64,${s}">`).join('')}</body>`);
  await board.waitForFunction(() => [...document.images].every((i) => i.complete));
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  await board.screenshot({ path: OUT });
  console.log(`wrote ${OUT}`);
} finally {
  await browser.close();
  await halley.stop();
}
