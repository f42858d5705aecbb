// Guests in video group chat, headless Chromium: a JsSIP page that never registers and has no
// password (the SIPml5 guide's "no login needed to make a call") calls with a From in our own
// domain. Run by tests/tests/conference_guests.rs, which starts Huddle with the conference plugin,
// a public room `lobby` and a members-only room `team` (PIN 1234), both composited at 640x360.
//
// What must hold: the public room admits the guest under the display name it sent (a conference
// subscriber sees it listed as a guest) and the guest receives the mix and decodes the composite;
// the same caller to the members-only room, and to a registered user, is challenged with 407
// (which it cannot answer), exactly as before public rooms existed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target, WAIT_MS, PAGE_MS } from '../lib/env.mjs';
import { withTimeout, cleanupAll } from '../lib/wait.mjs';
import { launchChromium, newPhoneContext } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { startJsSIP, unsubscribeJsSIP } from '../lib/jssip-node.mjs';

const MEDIA_MS = Number(process.env.HUDDLE_MEDIA_TIMEOUT_MS || 60000);
const WIDTH = 640;
const HEIGHT = 360;

/** A page with the JsSIP bundle loaded (the shared phone page; we drive JsSIP directly). */
async function openPage(browser, origin, label, cleanup, log) {
  const { context, page } = await newPhoneContext(browser, origin, label, log);
  cleanup.push(() => context.close());
  await withTimeout(page.goto(`${origin}/`), `${label}: page load`, PAGE_MS);
  await page.waitForFunction(() => window.phoneReady === true && !!window.JsSIP, null, { timeout: PAGE_MS }).catch(() => {
    throw new Error(`${label}: timed out waiting for the JsSIP bundle`);
  });
  cleanup.push(() => page.evaluate(() => window.guest?.ua.stop()).catch(() => {}));
  return page;
}

/**
 * Starts an unregistered JsSIP UA (no password) in the page and calls `to`; resolves with
 * `{ outcome: 'confirmed' }` or `{ outcome: 'failed', status, cause }`.
 */
function guestCall(page, label, o) {
  return withTimeout(
    page.evaluate(
      (a) =>
        new Promise((resolve) => {
          const ua = new window.JsSIP.UA({
            sockets: [new window.JsSIP.WebSocketInterface(a.wsUrl)],
            uri: a.uri,
            display_name: a.display,
            register: false,
            session_timers: false,
            user_agent: `huddle-client-tests JsSIP/${window.JsSIP.version} guest`,
          });
          window.guest = { ua, session: null };
          ua.once('connected', () => {
            const s = ua.call(a.to, { mediaConstraints: { audio: true, video: true }, pcConfig: { iceServers: [] } });
            window.guest.session = s;
            s.on('confirmed', () => resolve({ outcome: 'confirmed' }));
            s.on('failed', (e) => resolve({ outcome: 'failed', status: e.message?.status_code ?? null, cause: e.cause }));
          });
          ua.start();
        }),
      o,
    ),
    `${label}: call ${o.to} answered`,
    MEDIA_MS,
  );
}

/** Inbound audio/video counters of the guest's peer connection. */
function guestStats(page) {
  return page.evaluate(async () => {
    const pc = window.guest?.session?.connection;
    if (!pc) return null;
    const out = { audio: null, video: null };
    (await pc.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'audio') out.audio = { packets: s.packetsReceived ?? 0 };
      if (s.kind === 'video') out.video = { frames: s.framesDecoded ?? 0, width: s.frameWidth, height: s.frameHeight };
    });
    return out;
  });
}

/**
 * Polls until mix packets and composite frames at the room's size keep arriving (twice in a row
 * rising). The guest is alone in the room, so its N−1 mix is silence by design: no energy check.
 */
async function awaitGuestMedia(page, label, diag) {
  const deadline = Date.now() + MEDIA_MS;
  const good = (s, b) =>
    s?.audio && s?.video && s.audio.packets > b.packets && s.video.frames > b.frames && s.video.width === WIDTH && s.video.height === HEIGHT;
  let base = { packets: 0, frames: 0 };
  let hits = 0;
  let last = null;
  while (Date.now() < deadline && hits < 2) {
    last = await guestStats(page);
    if (good(last, base)) {
      hits += 1;
      base = { packets: last.audio.packets, frames: last.video.frames };
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  diag(`${label}: ${JSON.stringify(last)}`);
  assert.equal(hits, 2, `${label}: mix packets and ${WIDTH}x${HEIGHT} composite frames keep arriving`);
}

test('conference: a caller who never logged in joins the public room as a guest; members-only rooms and users still challenge it (407)', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());

  // A subscriber to the public room: itself unregistered and sending no credentials.
  const watcher = await startJsSIP(tg, 'alice', cleanup, { register: false, label: 'watcher' });
  const bodies = [];
  const sub = watcher.ua.subscribe(`sip:lobby@${tg.domain}`, 'conference', 'application/conference-info+xml', { expires: 600 });
  const listed = new Promise((resolve) => {
    sub.on('notify', (isFinal, request, body) => {
      bodies.push(body ?? '');
      if ((body ?? '').includes('<display-text>Gina the Guest</display-text>')) resolve(body);
    });
  });
  cleanup.push(() => unsubscribeJsSIP(sub, 'watcher'));
  sub.subscribe();

  // Guest (From in our domain, no password, never registered) → public room: admitted.
  const guest = await openPage(browser, server.origin, 'gina[guest]', cleanup, diag);
  const joined = await guestCall(guest, 'gina[guest]', {
    wsUrl: tg.wsUrl,
    uri: `sip:gina@${tg.domain}`,
    display: 'Gina the Guest',
    to: `sip:lobby@${tg.domain}`,
  });
  diag(`gina → lobby: ${JSON.stringify(joined)}`);
  assert.equal(joined.outcome, 'confirmed', `the public room admits the guest: ${JSON.stringify(joined)}`);
  const info = await withTimeout(listed, 'watcher: NOTIFY listing the guest', MEDIA_MS);
  assert.match(info, /<roles><entry>guest<\/entry><\/roles>/, 'listed in the guest role');
  await awaitGuestMedia(guest, 'gina[guest]', diag);
  await guest.evaluate(() => window.guest.session.terminate());

  // The same caller to a members-only room and to a registered user: challenged, 407.
  for (const [to, what] of [
    [`sip:team@${tg.domain};pin=1234`, 'members-only room'],
    [`sip:bob@${tg.domain}`, 'a user'],
  ]) {
    const page = await openPage(browser, server.origin, `gina→${what}`, cleanup, diag);
    const r = await guestCall(page, `gina→${what}`, { wsUrl: tg.wsUrl, uri: `sip:gina@${tg.domain}`, display: 'Gina the Guest', to });
    diag(`gina → ${what}: ${JSON.stringify(r)}`);
    assert.equal(r.outcome, 'failed', `${what}: not admitted`);
    assert.equal(r.status, 407, `${what}: challenged with 407`);
  }
});
