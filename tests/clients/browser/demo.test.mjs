// The demo page (web/, served by Huddle's [web] listener) driven like a newcomer would, in two
// headless Chromium tabs: alice and bob sign in through the form, see each other online (presence
// NOTIFY), chat (MESSAGE; the message arrives, and after a reload the history shows it), call each
// other from the contact list (audio and video both ways), join the same room with fake camera and microphone and each receives audio and video (getStats rising),
// then alice presses "Share screen": her screen goes to the room's screen URI (screenshare plugin,
// template from /config.json), bob's page notices the presentation and shows alice's screen in its
// own video element (frames decoded, rising, at the size alice sends), bob sharing meanwhile is
// refused with the server's 403, and alice stopping ends bob's view. The pages state exactly what
// the server answered each time.
// Run by tests/tests/demo_page.rs, which starts Huddle with the presence, messaging, conference
// and screenshare plugins and the page.
//
//   HUDDLE_WEB_URL         http://127.0.0.1:PORT (required)
//   HUDDLE_SCREENSHOT_DIR  where the room screenshots go (required)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { PAGE_MS, WAIT_MS } from '../lib/env.mjs';
import { withTimeout, cleanupAll } from '../lib/wait.mjs';
import { launchChromium, newPhoneContext } from '../lib/chromium.mjs';

const WEB = process.env.HUDDLE_WEB_URL;
const SHOTS = process.env.HUDDLE_SCREENSHOT_DIR;
const MEDIA_MS = Number(process.env.HUDDLE_MEDIA_TIMEOUT_MS || 60000);

async function openDemo(browser, name, cleanup, diag) {
  const { context, page } = await newPhoneContext(browser, WEB, name, diag);
  cleanup.push(() => context.close());
  page.on('response', (r) => r.status() >= 400 && diag(`${name}: HTTP ${r.status()} for ${r.url()}`));
  await page.goto(`${WEB}/`);
  const tab = { name, page, context };
  await signIn(tab);
  return tab;
}

/** Fills the sign-in form as a person would and waits for the page to say so. */
async function signIn({ name, page }) {
  await page.locator('#user').fill(name, { timeout: PAGE_MS });
  await page.locator('#password').fill(`${name}-pw`);
  await page.locator('#sign-in-button').click();
  await page.locator('#status', { hasText: `Signed in as ${name}.` }).waitFor({ timeout: WAIT_MS });
}

const contact = (page, name, state = '') => page.locator(`#contacts li[data-name="${name}"]${state}`);

async function inbound(tab, which) {
  return tab.page.evaluate(async (which) => {
    const s = await window.demo[which]();
    const pick = (r) => r && { packetsReceived: r.packetsReceived, framesDecoded: r.framesDecoded, energy: r.totalAudioEnergy };
    return { audio: pick(s.audio), video: pick(s.video) };
  }, which);
}

/**
 * Polls getStats of the room or call session (`which`: 'roomStats' or 'callStats'; no event says
 * "packets arrived") until inbound audio packets and decoded video frames are seen and then rise
 * again, video by at least `frames` more.
 */
async function awaitMedia(tab, which, diag, frames = 1) {
  const deadline = Date.now() + MEDIA_MS;
  let base = null;
  let last = null;
  while (Date.now() < deadline) {
    last = await inbound(tab, which);
    const flowing = last.audio?.packetsReceived > 0 && last.video?.framesDecoded > 0;
    if (flowing && !base) base = last;
    else if (flowing && last.audio.packetsReceived > base.audio.packetsReceived && last.video.framesDecoded >= base.video.framesDecoded + frames) {
      diag(`${tab.name} ${which}: audio packets ${base.audio.packetsReceived} -> ${last.audio.packetsReceived}, video frames decoded ${base.video.framesDecoded} -> ${last.video.framesDecoded}`);
      return last;
    }
    await new Promise((r) => setTimeout(r, 400));
  }
  throw new Error(`${tab.name}: timed out after ${MEDIA_MS} ms waiting for ${which} audio packets and decoded video frames to rise; last ${JSON.stringify(last)}`);
}

/**
 * Polls the watched screen's getStats (viewer) and the shared screen's (presenter) until the viewer
 * has decoded frames at the size the presenter encodes and then 5 more; returns both.
 */
async function awaitScreen(viewer, presenter, diag) {
  const deadline = Date.now() + MEDIA_MS;
  let base = null;
  let last = null;
  let sent = null;
  while (Date.now() < deadline) {
    last = await viewer.page.evaluate(async () => {
      const v = (await window.demo.screenStats()).video;
      return v && { framesDecoded: v.framesDecoded ?? 0, frameWidth: v.frameWidth, frameHeight: v.frameHeight };
    });
    sent = await presenter.page.evaluate(() => window.demo.screenSent());
    const asSent = last?.framesDecoded > 0 && sent?.frameWidth > 0 && last.frameWidth === sent.frameWidth && last.frameHeight === sent.frameHeight;
    if (asSent && !base) base = last;
    else if (asSent && last.framesDecoded >= base.framesDecoded + 5) {
      diag(`${viewer.name} watching: frames decoded ${base.framesDecoded} -> ${last.framesDecoded} at ${last.frameWidth}x${last.frameHeight}; ${presenter.name} sends ${JSON.stringify(sent)}`);
      return { seen: last, sent };
    }
    await new Promise((r) => setTimeout(r, 400));
  }
  throw new Error(`${viewer.name}: timed out after ${MEDIA_MS} ms waiting for the shared screen's frames at the sent size to rise; last ${JSON.stringify(last)}, sent ${JSON.stringify(sent)}`);
}

test('two demo pages: presence, chat with history, a room with audio and video, screen share', { timeout: 300000 }, async (t) => {
  assert.ok(WEB, 'HUDDLE_WEB_URL is set (tests/tests/demo_page.rs sets it)');
  assert.ok(SHOTS, 'HUDDLE_SCREENSHOT_DIR is set');
  const diag = (m) => t.diagnostic(m);
  const cleanup = [];
  try {
    const browser = await launchChromium();
    cleanup.push(() => browser.close());
    const alice = await openDemo(browser, 'alice', cleanup, diag);
    const bob = await openDemo(browser, 'bob', cleanup, diag);

    // Contacts from /api/contacts (digest-authenticated), presence from NOTIFY.
    await contact(alice.page, 'bob', '.online').waitFor({ timeout: WAIT_MS });
    await contact(bob.page, 'alice', '.online').waitFor({ timeout: WAIT_MS });
    await contact(alice.page, 'carol', '.offline[data-presence="closed"]').waitFor({ timeout: WAIT_MS });
    diag('alice and bob see each other online; the server says carol is offline');

    // Chat: bob has alice's conversation open; alice sends.
    const text = `hello bob ${Date.now()}`;
    await contact(bob.page, 'alice').locator('.name').click();
    await contact(alice.page, 'bob').locator('.name').click();
    await alice.page.locator('#chat-text').fill(text);
    await alice.page.locator('#chat-send').click();
    await bob.page.locator('#messages li.in', { hasText: text }).waitFor({ timeout: WAIT_MS });
    await alice.page.locator('#messages li.out[data-state="sent"]', { hasText: text }).waitFor({ timeout: WAIT_MS });
    diag('the message reached bob and alice saw 200 OK');

    // After a reload bob signs in again; the conversation's history comes from the server. The
    // plugin writes history in batches (`history_flush_ms`, 200 ms by default), so the reload
    // waits until the server has it.
    await bob.page.waitForFunction(
      async (t) => (await window.demo.history('alice')).messages.some((m) => m.text === t),
      text,
      { timeout: WAIT_MS, polling: 100 },
    );
    await bob.page.reload();
    await signIn(bob);
    await contact(bob.page, 'alice').locator('.name').click();
    await bob.page.locator('#messages li.in[data-state="history"]', { hasText: text }).waitFor({ timeout: WAIT_MS });
    diag('after a reload bob sees the message in the history');

    // A one-to-one call from the contact list: bob answers, both receive audio and video.
    await contact(alice.page, 'bob').locator('.call').click();
    await bob.page.locator('#answer').click({ timeout: WAIT_MS });
    for (const tab of [alice, bob]) {
      await tab.page.locator('#call-state', { hasText: 'In a call with' }).waitFor({ timeout: WAIT_MS });
    }
    await Promise.all([awaitMedia(alice, 'callStats', diag), awaitMedia(bob, 'callStats', diag)]);
    await alice.page.locator('#hang-up').click();
    for (const tab of [alice, bob]) {
      await tab.page.locator('#call-state', { hasText: 'ended' }).waitFor({ timeout: WAIT_MS });
    }

    // Both join the room the page offers (from [web] room).
    for (const tab of [alice, bob]) {
      await tab.page.locator('#join-room').click();
      await tab.page.locator('#room-state', { hasText: 'In room' }).waitFor({ timeout: WAIT_MS });
    }
    // 30 more frames (2 s of the 15 fps composite) before the screenshot, so the composite has
    // had time to lay out both participants.
    await Promise.all([awaitMedia(alice, 'roomStats', diag, 30), awaitMedia(bob, 'roomStats', diag, 30)]);
    const shot = path.join(SHOTS, 'demo-room.png');
    await alice.page.screenshot({ path: shot, fullPage: true });
    diag(`screenshot of alice's room page: ${shot}`);

    // Screen share: a video-only call to the room's screen URI (the screenshare relay, not a seat
    // in the room); the page says what the server answered.
    const share = async (tab, expect) => {
      await tab.page.locator('#share-screen').click();
      const state = tab.page.locator('#share-state');
      // Answered once Chromium has captured the screen and the relay has answered: media set-up.
      await state.filter({ hasText: expect }).waitFor({ timeout: MEDIA_MS }).catch(async (e) => {
        throw new Error(`${tab.name} screen share: expected ${expect}, page says "${await state.textContent()}" (${e.message})`);
      });
      const said = await state.textContent();
      const outcome = await tab.page.evaluate(() => window.demo.screenOutcome());
      diag(`${tab.name} screen share: page says "${said}" (server answered ${outcome})`);
      return outcome;
    };
    assert.equal(await share(alice, /Sharing your screen/), 200, 'the relay took alice\'s screen');

    // bob's page notices the presentation and watches it in its own video element.
    await bob.page.locator('#screen-state', { hasText: "Watching alice's screen." }).waitFor({ timeout: MEDIA_MS });
    const { seen, sent } = await awaitScreen(bob, alice, diag);
    assert.ok(await bob.page.locator('#screen-video').isVisible(), "bob's page shows the screen in its own video element");
    assert.equal(seen.frameWidth, sent.frameWidth, 'bob decodes the width alice sends (relayed as-is)');
    await bob.page.screenshot({ path: path.join(SHOTS, 'demo-room-watching.png'), fullPage: true });

    // One presenter at a time: bob's share is refused and his page says why.
    assert.equal(await share(bob, /refused the screen share: 403 Forbidden - alice Is Presenting/), 403);

    // alice stops sharing: the relay ends bob's view and his page says so.
    await alice.page.locator('#share-screen', { hasText: 'Stop sharing' }).click();
    await alice.page.locator('#share-state', { hasText: 'Screen sharing stopped.' }).waitFor({ timeout: WAIT_MS });
    await bob.page.locator('#screen-state', { hasText: "alice's screen share ended." }).waitFor({ timeout: WAIT_MS });
    assert.ok(!(await bob.page.locator('#screen-video').isVisible()), 'the screen video is hidden again');

    // Leaving ends the room call and a running screen share with it.
    assert.equal(await share(alice, /Sharing your screen/), 200, 'alice shares again');
    await alice.page.locator('#leave-room').click();
    await alice.page.locator('#room-state', { hasText: 'Left room' }).waitFor({ timeout: WAIT_MS });
    await alice.page.locator('#share-state', { hasText: 'Screen sharing stopped.' }).waitFor({ timeout: WAIT_MS });
    await bob.page.locator('#leave-room').click();
    await bob.page.locator('#room-state', { hasText: 'Left room' }).waitFor({ timeout: WAIT_MS });
  } finally {
    await withTimeout(cleanupAll(cleanup), 'closing the browser', 20000).catch((e) => diag(String(e)));
  }
});
