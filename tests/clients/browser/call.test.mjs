// Audio+video calls between two headless Chromium pages through the server under test.
//
// The page (browser/page/) and the libraries are served by a local HTTP server started here: JsSIP as a
// bundle built from its CommonJS sources (lib/cjs-bundle.mjs; npm's jssip ships no browser build), SIP.js
// as its own ES modules. Each phone has its own browser context (own profile) with camera/microphone
// granted; the fake devices send a moving 640x480 picture and a beep. Media goes browser to browser on
// loopback (the server only relays SDP), so what is checked is that signalling through the server was
// complete and correct enough for ICE/DTLS to connect and RTP to flow both ways.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target, user, WAIT_MS, PAGE_MS } from '../lib/env.mjs';
import { withTimeout, cleanupAll } from '../lib/wait.mjs';
import { launchChromium, newPhoneContext } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';

const MEDIA_MS = Number(process.env.HUDDLE_MEDIA_TIMEOUT_MS || 30000);

async function openPhone(browser, origin, label, cleanup, log) {
  const { context, page } = await newPhoneContext(browser, origin, label, log);
  cleanup.push(() => context.close());
  await withTimeout(page.goto(`${origin}/${process.env.HUDDLE_TRACE_SIP === '1' ? '?trace=1' : ''}`), `${label}: page load`, PAGE_MS);
  await page.waitForFunction(() => window.phoneReady === true, null, { timeout: PAGE_MS }).catch(() => {
    throw new Error(`${label}: timed out waiting for the phone module (SIP.js ESM + JsSIP bundle) to load`);
  });
  return page;
}

/** page.evaluate with a Node-side bound as well, in case the page hangs. */
async function inPage(page, label, what, fn, arg, ms = WAIT_MS) {
  try {
    return await withTimeout(page.evaluate(fn, arg), `${label}: ${what}`, ms + 2000);
  } catch (e) {
    const msg = String(e?.message ?? e).replace(/^page\.evaluate: Error: /, '');
    throw new Error(msg.startsWith(label) ? msg : `${label}: ${what}: ${msg}`);
  }
}

test('Chromium: starts headless with fake camera/microphone; JsSIP and SIP.js load in the page', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());
  t.diagnostic(`chromium ${browser.version()}`);

  const page = await openPhone(browser, server.origin, 'probe', cleanup, (l) => t.diagnostic(l));
  const libs = await inPage(page, 'probe', 'library versions', () => window.phone.libs());
  t.diagnostic(`libraries in page: ${JSON.stringify(libs)}`);
  assert.match(libs.jssip ?? '', /^3\.13\./, 'JsSIP 3.13 loaded from the bundle');
  assert.equal(libs.sipjs, 'UserAgent', 'SIP.js loaded as ES modules');

  const tracks = await inPage(page, 'probe', 'getUserMedia({audio, video}) with fake devices', () => window.phone.probeMedia());
  t.diagnostic(`fake media: ${tracks.map((x) => `${x.kind} "${x.label}" ${x.settings.width ?? ''}x${x.settings.height ?? ''}`).join(', ')}`);
  assert.deepEqual(tracks.map((x) => x.kind).sort(), ['audio', 'video']);
});

function fmt(s) {
  if (!s) return 'no stats';
  const a = s.audio ?? {};
  const v = s.video ?? {};
  return (
    `audio pkts=${a.packetsReceived} energy=${a.totalAudioEnergy?.toFixed?.(3)} (${a.codec}); ` +
    `video pkts=${v.packetsReceived} framesDecoded=${v.framesDecoded} ${v.frameWidth}x${v.frameHeight} (${v.codec}); ` +
    `<video> ${s.remoteVideo?.width}x${s.remoteVideo?.height} t=${s.remoteVideo?.currentTime?.toFixed?.(2)}; ice=${s.iceConnectionState}; pair ${s.pair}`
  );
}

const flowing = (s) => s && s.audio?.packetsReceived > 0 && s.video?.packetsReceived > 0 && s.video?.framesDecoded > 0;

/**
 * Sample getStats on `page` until audio and video inbound RTP have arrived and video frames were decoded,
 * then once more ~2 s later to see the counters rise (media still flowing, not a burst). Polling is the
 * only way: there is no event for "packets received".
 */
async function awaitInboundMedia(page, label, diag) {
  const deadline = Date.now() + MEDIA_MS;
  let first = null;
  while (Date.now() < deadline) {
    const s = await inPage(page, label, 'getStats()', () => window.phone.stats());
    if (flowing(s)) {
      first = s;
      break;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (!first) {
    const last = await inPage(page, label, 'getStats()', () => window.phone.stats());
    throw new Error(`${label}: timed out after ${MEDIA_MS} ms waiting for inbound audio+video RTP and decoded video frames; last: ${fmt(last)}`);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const second = await inPage(page, label, 'getStats()', () => window.phone.stats());
  diag(`${label} sample 1: ${fmt(first)}`);
  diag(`${label} sample 2: ${fmt(second)}`);
  assert.ok(second.audio.packetsReceived > first.audio.packetsReceived, `${label}: audio packetsReceived rising`);
  assert.ok(second.video.packetsReceived > first.video.packetsReceived, `${label}: video packetsReceived rising`);
  assert.ok(second.video.framesDecoded > first.video.framesDecoded, `${label}: video framesDecoded rising`);
  assert.ok(second.remoteVideo.width > 0, `${label}: remote <video> has a picture`);
  // The fake microphone beeps; energy is measured on playout (the remote <video> is not muted).
  assert.ok(second.audio.totalAudioEnergy > first.audio.totalAudioEnergy, `${label}: received audio has energy (the fake beep)`);
  assert.ok(second.remoteVideo.currentTime > first.remoteVideo.currentTime, `${label}: remote <video> is playing`);
  return second;
}

for (const [callerLib, calleeLib] of [
  ['jssip', 'sipjs'],
  ['sipjs', 'jssip'],
]) {
  test(`call: alice (${callerLib}) calls bob (${calleeLib}) with audio+video, bob auto-answers, media both ways, alice hangs up`, async (t) => {
    const cleanup = [];
    t.after(() => cleanupAll(cleanup));
    const diag = (l) => t.diagnostic(l);
    const tg = target();
    const alice = user(tg, 'alice');
    const bob = user(tg, 'bob');

    const server = await startStaticServer();
    cleanup.push(() => server.close());
    const browser = await launchChromium();
    cleanup.push(() => browser.close());

    const A = `alice[${callerLib}]`;
    const B = `bob[${calleeLib}]`;
    const pa = await openPhone(browser, server.origin, A, cleanup, diag);
    const pb = await openPhone(browser, server.origin, B, cleanup, diag);
    // Unregister (and so leave the server clean) before the contexts close.
    cleanup.push(() => inPage(pa, A, 'stop/unregister', (ms) => window.phone.stop(ms), 3000, 3000).catch(() => {}));
    cleanup.push(() => inPage(pb, B, 'stop/unregister', (ms) => window.phone.stop(ms), 3000, 3000).catch(() => {}));

    const opts = (u, lib, autoAnswer, label) => ({ lib, wsUrl: tg.wsUrl, uri: u.aor, user: u.name, password: u.password, autoAnswer, label });
    await inPage(pb, B, 'registered', (a) => window.phone.start(a.o, a.ms), { o: opts(bob, calleeLib, true, B), ms: WAIT_MS });
    await inPage(pa, A, 'registered', (a) => window.phone.start(a.o, a.ms), { o: opts(alice, callerLib, false, A), ms: WAIT_MS });

    await inPage(pa, A, 'INVITE sent', (to) => window.phone.call(to), `sip:bob@${tg.domain}`);
    const established = (page, label) =>
      inPage(page, label, "call 'established' (200 OK/ACK)", (ms) => window.phone.waitFor('established', ms, ['failed', 'ended']), MEDIA_MS, MEDIA_MS);
    await Promise.all([established(pa, A), established(pb, B)]);
    diag(`call established; alice events: ${(await pa.evaluate(() => window.phone.events())).join(', ')}`);

    const [sa, sb] = await Promise.all([awaitInboundMedia(pa, A, diag), awaitInboundMedia(pb, B, diag)]);
    assert.ok(sa && sb);

    await inPage(pa, A, 'hang up (BYE)', () => window.phone.hangup());
    const ended = (page, label) => inPage(page, label, "session 'ended'", (ms) => window.phone.waitFor('ended', ms), WAIT_MS);
    await Promise.all([ended(pa, A), ended(pb, B)]);
    diag(`bob events: ${(await pb.evaluate(() => window.phone.events())).join(', ')}`);
  });
}
