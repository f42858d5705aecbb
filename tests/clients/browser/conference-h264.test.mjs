// H.264 into the conference, in headless Chromium. Run by tests/tests/conference_h264.rs, which
// starts Huddle with the conference plugin (room `team`, no PIN, a 320x180 grid composite).
//
// alice (JsSIP) joins with her camera in VP8, as browsers offer by default. bob (JsSIP) joins
// with every video transceiver restricted to H.264 before each offer
// (RTCRtpTransceiver.setCodecPreferences), so his offer has no VP8. What must hold:
//   * bob's call is answered with one H.264 format on his video m-line, sendrecv, and he sends
//     H.264 (his outbound stats);
//   * alice's composite (VP8) shows bob's tile — the right cell of the 2x1 grid — with his
//     decoded camera: bright and moving, not the black of a tile whose decoder never output a
//     picture nor the static dark placeholder of a participant without video;
//   * bob receives the room's H.264 composite: his inbound video is H.264, decoded by Chromium
//     at the composite's size (320x180), and alice's tile — the left cell — shows her camera,
//     bright and moving.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target, user, WAIT_MS, PAGE_MS } from '../lib/env.mjs';
import { withTimeout, cleanupAll } from '../lib/wait.mjs';
import { launchChromium, newPhoneContext } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { inPage, MEDIA_MS } from '../lib/screen-lines.mjs';

const ROOM = process.env.HUDDLE_ROOM || 'team';
// The placeholder tile is #303040 (luma ≈ 50) and the background black: a decoded camera
// is brighter than this.
const CAMERA = 70;

/** Runs in bob's page before its scripts: H.264 only, on every transceiver, before each offer. */
function forceH264() {
  const original = RTCPeerConnection.prototype.createOffer;
  window.offerPcs = [];
  RTCPeerConnection.prototype.createOffer = function (...args) {
    const codecs = RTCRtpReceiver.getCapabilities('video').codecs.filter((c) => /^video\/(H264|rtx)$/i.test(c.mimeType));
    for (const t of this.getTransceivers()) {
      if (t.receiver.track?.kind === 'video') t.setCodecPreferences(codecs);
    }
    if (!window.offerPcs.includes(this)) window.offerPcs.push(this);
    return original.apply(this, args);
  };
}

/** A registered phone page in the room; `h264` restricts its video to H.264. */
async function joinRoom(browser, origin, tg, name, h264, cleanup, diag) {
  const label = `${name}[jssip${h264 ? ', h264' : ''}]`;
  const { context, page } = await newPhoneContext(browser, origin, label, diag);
  cleanup.push(() => context.close());
  if (h264) await page.addInitScript(forceH264);
  await withTimeout(page.goto(`${origin}/`), `${label}: page load`, PAGE_MS);
  await page.waitForFunction(() => window.phoneReady === true, null, { timeout: PAGE_MS });
  cleanup.push(() => inPage(page, label, 'stop', (ms) => window.phone.stop(ms), 3000, 3000).catch(() => {}));
  const u = user(tg, name);
  const o = { lib: 'jssip', wsUrl: tg.wsUrl, uri: u.aor, user: u.name, password: u.password, autoAnswer: false, label };
  await inPage(page, label, 'registered', (a) => window.phone.start(a.o, a.ms), { o, ms: WAIT_MS });
  await inPage(page, label, 'INVITE to the room', (to) => window.phone.call(to), `sip:${ROOM}@${tg.domain}`);
  await inPage(page, label, "in the room ('established')", (ms) => window.phone.waitFor('established', ms, ['failed', 'ended']), MEDIA_MS, MEDIA_MS);
  return { page, label, name };
}

/** Mean luma of a cell of the 2x1 grid (its upper part, clear of the name label): bob's, the
 *  right one (`x0` 0.6), or alice's, the left one (`x0` 0.1). */
function tile(who, x0) {
  return inPage(who.page, who.label, 'composite pixels', async (x0) => {
    const v = document.getElementById('remote');
    const w = v.videoWidth;
    const h = v.videoHeight;
    if (!w || !h) return null;
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    const g = c.getContext('2d', { willReadFrequently: true });
    g.drawImage(v, 0, 0, w, h);
    const d = g.getImageData(Math.round(x0 * w), Math.round(0.3 * h), Math.round(0.3 * w), Math.round(0.22 * h)).data;
    let sum = 0;
    let sumSq = 0;
    const n = d.length / 4;
    for (let i = 0; i < d.length; i += 4) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += y;
      sumSq += y * y;
    }
    const mean = sum / n;
    const stats = await window.phone.stats();
    // A checksum of the region: the fake camera moves, a placeholder does not.
    let hash = 0;
    for (let i = 0; i < d.length; i += 16) hash = (hash * 31 + d[i]) >>> 0;
    return {
      w,
      h,
      mean: Math.round(mean),
      spread: Math.round(Math.sqrt(Math.max(0, sumSq / n - mean * mean))),
      hash,
      framesDecoded: stats?.video?.framesDecoded ?? 0,
      codec: stats?.video?.codec ?? null,
    };
  }, x0);
}

/** Waits until `who`'s cell at `x0` is brighter than a placeholder and has changed picture
 *  with more frames decoded; returns the first bright sample and the last. */
async function bright(who, x0) {
  const deadline = Date.now() + MEDIA_MS;
  let first = null;
  let last = null;
  while (Date.now() < deadline) {
    last = await tile(who, x0);
    if (last && last.mean > CAMERA) {
      if (!first) first = last;
      else if (last.hash !== first.hash && last.framesDecoded > first.framesDecoded) break;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return { first, last };
}

test(`conference: an H.264-only participant shows in the VP8 composite of ${ROOM} and receives an H.264 one`, async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());

  const alice = await joinRoom(browser, server.origin, tg, 'alice', false, cleanup, diag);
  const bob = await joinRoom(browser, server.origin, tg, 'bob', true, cleanup, diag);

  // bob's side: his offer had no VP8, the answer took one H.264 format both ways.
  const negotiated = await inPage(bob.page, bob.label, 'H.264 negotiated and sent', async (ms) => {
    const pc = window.offerPcs.at(-1);
    const deadline = Date.now() + ms;
    for (;;) {
      const offer = pc.localDescription?.sdp ?? '';
      const answer = pc.remoteDescription?.sdp ?? '';
      const video = answer.slice(answer.indexOf('m=video'));
      let out = null;
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') out = s;
      });
      const codec = out ? (await pc.getStats()).get(out.codecId)?.mimeType : null;
      const r = {
        offerHasVp8: /a=rtpmap:\d+ VP8\//.test(offer),
        answerVideo: video.split('\r\n').filter((l) => /^(m=video|a=rtpmap|a=(sendrecv|sendonly|recvonly|inactive))/.test(l)),
        codec,
        framesEncoded: out?.framesEncoded ?? 0,
      };
      if ((r.codec && r.framesEncoded > 10) || Date.now() > deadline) return r;
      await new Promise((res) => setTimeout(res, 250));
    }
  }, MEDIA_MS, MEDIA_MS);
  diag(`bob: ${JSON.stringify(negotiated)}`);
  assert.equal(negotiated.offerHasVp8, false, "bob's offer is H.264 only");
  assert.ok(negotiated.answerVideo.includes('a=sendrecv'), 'the server sends and receives on his video m-line');
  assert.equal(negotiated.answerVideo.filter((l) => / H264\//.test(l)).length, 1, 'one H.264 format in his answer');
  assert.ok(negotiated.answerVideo.every((l) => !/VP8/.test(l)), 'no VP8 in his answer');
  assert.equal(negotiated.codec, 'video/H264', 'bob sends H.264');
  assert.ok(negotiated.framesEncoded > 10, 'bob keeps sending');

  // alice's composite: bob's cell shows his decoded camera, and it moves.
  const seen = await bright(alice, 0.6);
  diag(`alice sees bob's tile: first ${JSON.stringify(seen.first)}, then ${JSON.stringify(seen.last)}`);
  assert.ok(seen.first, `bob's tile is brighter than a placeholder or black (last: ${JSON.stringify(seen.last)})`);
  assert.notEqual(seen.last.hash, seen.first.hash, "bob's tile moves: his camera, decoded");

  // bob's composite: H.264, decoded at the canvas size, alice's cell shows her camera moving.
  const back = await bright(bob, 0.1);
  diag(`bob sees alice's tile: first ${JSON.stringify(back.first)}, then ${JSON.stringify(back.last)}`);
  assert.ok(back.first, `alice's tile in bob's composite is brighter than a placeholder or black (last: ${JSON.stringify(back.last)})`);
  assert.equal(back.last.codec, 'video/H264', 'bob receives the composite in H.264');
  assert.deepEqual([back.last.w, back.last.h], [320, 180], "the composite's size");
  assert.notEqual(back.last.hash, back.first.hash, "alice's tile moves in bob's H.264 composite");
  assert.ok(back.last.framesDecoded > back.first.framesDecoded, 'bob keeps decoding the H.264 composite');

  for (const p of [alice, bob]) {
    await inPage(p.page, p.label, 'leave the room (BYE)', () => window.phone.hangup());
    await inPage(p.page, p.label, "session 'ended'", (ms) => window.phone.waitFor('ended', ms), WAIT_MS);
  }
});
