// Video group chat in headless Chromium: three participants (JsSIP, SIP.js, JsSIP) call the room
// sip:team@<domain>;pin=1234 served by the conference plugin (the MCU). Run by
// tests/tests/conference_browser.rs, which starts Huddle with the plugin loaded and a room `team`
// (PIN 1234, composite 640x360).
//
// What must hold, for each participant: the mix it receives has energy (the others' fake microphones
// beep; nobody hears silence), and the composite video keeps decoding at the room's size. When one
// leaves, the other two keep receiving both. A Node JsSIP subscriber (Event: conference, RFC 4575)
// sees the participants join and leave. A wrong or missing PIN is refused with 403.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target, user, WAIT_MS, PAGE_MS } from '../lib/env.mjs';
import { withTimeout, cleanupAll } from '../lib/wait.mjs';
import { launchChromium, newPhoneContext } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { startJsSIP, unsubscribeJsSIP } from '../lib/jssip-node.mjs';

const MEDIA_MS = Number(process.env.HUDDLE_MEDIA_TIMEOUT_MS || 60000);
// ICE-lite drops a leg 15 s after the peer's last connectivity check; then the BYE comes.
const SERVER_BYE_MS = Number(process.env.HUDDLE_SERVER_BYE_TIMEOUT_MS || 45000);
const ROOM = process.env.HUDDLE_ROOM || 'team';
const PIN = process.env.HUDDLE_ROOM_PIN || '1234';
const WIDTH = Number(process.env.HUDDLE_ROOM_WIDTH || 640);
const HEIGHT = Number(process.env.HUDDLE_ROOM_HEIGHT || 360);

async function openPhone(browser, origin, label, cleanup, log) {
  const { context, page } = await newPhoneContext(browser, origin, label, log);
  cleanup.push(() => context.close());
  await withTimeout(page.goto(`${origin}/${process.env.HUDDLE_TRACE_SIP === '1' ? '?trace=1' : ''}`), `${label}: page load`, PAGE_MS);
  await page.waitForFunction(() => window.phoneReady === true, null, { timeout: PAGE_MS }).catch(() => {
    throw new Error(`${label}: timed out waiting for the phone module to load`);
  });
  return page;
}

async function inPage(page, label, what, fn, arg, ms = WAIT_MS) {
  try {
    return await withTimeout(page.evaluate(fn, arg), `${label}: ${what}`, ms + 2000);
  } catch (e) {
    const msg = String(e?.message ?? e).replace(/^page\.evaluate: Error: /, '');
    throw new Error(msg.startsWith(label) ? msg : `${label}: ${what}: ${msg}`);
  }
}

const stats = (p) => inPage(p.page, p.label, 'getStats()', () => window.phone.stats());

function fmt(s) {
  if (!s) return 'no stats';
  const a = s.audio ?? {};
  const v = s.video ?? {};
  return (
    `audio pkts=${a.packetsReceived} energy=${a.totalAudioEnergy?.toFixed?.(4)} (${a.codec}); video pkts=${v.packetsReceived} ` +
    `decoded=${v.framesDecoded} key=${v.keyFramesDecoded} pli=${v.pliCount} ${v.frameWidth}x${v.frameHeight} (${v.codec}); ice=${s.iceConnectionState}`
  );
}

/**
 * Polls getStats until the received mix has energy and composite frames are decoding at the room's
 * size, then requires all three counters to rise again (flowing, not a burst). Polling: there is no
 * event for "packets received".
 */
async function awaitRoomMedia(p, diag, after = null) {
  const base = {
    a: after?.audio?.packetsReceived ?? 0,
    e: after?.audio?.totalAudioEnergy ?? 0,
    f: after?.video?.framesDecoded ?? 0,
  };
  const past = (s, b) =>
    s &&
    s.audio?.packetsReceived > b.a &&
    (s.audio?.totalAudioEnergy ?? 0) > b.e &&
    s.video?.framesDecoded > b.f &&
    s.video?.frameWidth === WIDTH &&
    s.video?.frameHeight === HEIGHT;
  const deadline = Date.now() + MEDIA_MS;
  let first = null;
  while (Date.now() < deadline) {
    const s = await stats(p);
    if (past(s, base)) {
      first = s;
      break;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  if (!first) throw new Error(`${p.label}: timed out after ${MEDIA_MS} ms waiting for mixed audio with energy and ${WIDTH}x${HEIGHT} composite frames; last: ${fmt(await stats(p))}`);
  const next = { a: first.audio.packetsReceived, e: first.audio.totalAudioEnergy, f: first.video.framesDecoded };
  let second = first;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    second = await stats(p);
    if (past(second, next)) break;
  }
  diag(`${p.label} sample 1: ${fmt(first)}`);
  diag(`${p.label} sample 2: ${fmt(second)}`);
  assert.ok(second.audio.packetsReceived > next.a, `${p.label}: mixed audio packets rising`);
  assert.ok(second.audio.totalAudioEnergy > next.e, `${p.label}: the mix has energy (not silence)`);
  assert.ok(second.video.framesDecoded > next.f, `${p.label}: composite frames keep decoding`);
  assert.equal(second.video.frameWidth, WIDTH, `${p.label}: composite width`);
  assert.equal(second.video.frameHeight, HEIGHT, `${p.label}: composite height`);
  return second;
}

async function join(browser, origin, tg, name, lib, cleanup, diag, roomUri) {
  const label = `${name}[${lib}]`;
  const page = await openPhone(browser, origin, label, cleanup, diag);
  cleanup.push(() => inPage(page, label, 'stop/unregister', (ms) => window.phone.stop(ms), 3000, 3000).catch(() => {}));
  const u = user(tg, name);
  const o = { lib, wsUrl: tg.wsUrl, uri: u.aor, user: u.name, password: u.password, autoAnswer: false, label };
  await inPage(page, label, 'registered', (a) => window.phone.start(a.o, a.ms), { o, ms: WAIT_MS });
  await inPage(page, label, 'INVITE sent', (to) => window.phone.call(to), roomUri);
  return { page, label };
}

/** A conference subscription whose NOTIFY bodies are kept; `until(pred)` waits for a matching one. */
async function subscribeConference(tg, cleanup, diag) {
  const client = await startJsSIP(tg, 'alice', cleanup, { label: 'watcher' });
  const bodies = [];
  const waiters = [];
  const sub = client.ua.subscribe(`sip:${ROOM}@${tg.domain}`, 'conference', 'application/conference-info+xml', { expires: 600 });
  sub.on('notify', (isFinal, request, body) => {
    bodies.push(body ?? '');
    diag(`watcher: NOTIFY (${request.getHeader('Subscription-State')}) users=${(body?.match(/<user /g) ?? []).length}`);
    for (const w of [...waiters]) w();
  });
  cleanup.push(() => unsubscribeJsSIP(sub, 'watcher'));
  sub.subscribe();
  const until = (what, pred) =>
    withTimeout(
      new Promise((resolve) => {
        const check = () => {
          const hit = bodies.find(pred);
          if (hit) {
            waiters.splice(waiters.indexOf(check), 1);
            resolve(hit);
          }
        };
        waiters.push(check);
        check();
      }),
      `watcher: NOTIFY ${what}`,
      MEDIA_MS,
    );
  return { until, bodies };
}

test(`conference: three participants in sip:${ROOM} hear the others and see the composite; one leaves, the others continue; a vanished participant does not stop the others; NOTIFY lists them`, async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());

  const watcher = await subscribeConference(tg, cleanup, diag);
  await watcher.until('with the (empty) room state', (b) => b.includes('<conference-info'));

  const roomUri = `sip:${ROOM}@${tg.domain};pin=${PIN}`;
  const people = [];
  for (const [name, lib] of [
    ['alice', 'jssip'],
    ['bob', 'sipjs'],
    ['carol', 'jssip'],
  ]) {
    people.push(await join(browser, server.origin, tg, name, lib, cleanup, diag, roomUri));
  }
  for (const p of people) {
    await inPage(p.page, p.label, "call 'established'", (ms) => window.phone.waitFor('established', ms, ['failed', 'ended']), MEDIA_MS, MEDIA_MS);
  }
  const three = await watcher.until('listing alice, bob and carol', (b) =>
    ['alice', 'bob', 'carol'].every((n) => b.includes(`entity="sip:${n}@${tg.domain}"`)),
  );
  assert.match(three, /<user-count>3<\/user-count>/);

  for (const p of people) await awaitRoomMedia(p, diag);

  // carol leaves; alice and bob keep hearing and seeing.
  const [alice, bob, carol] = people;
  await inPage(carol.page, carol.label, 'hang up (BYE)', () => window.phone.hangup());
  await inPage(carol.page, carol.label, "session 'ended'", (ms) => window.phone.waitFor('ended', ms), WAIT_MS);
  await watcher.until('without carol', (b) => b.includes('<user-count>2</user-count>') && !b.includes(`sip:carol@${tg.domain}`));
  for (const p of [alice, bob]) await awaitRoomMedia(p, diag, await stats(p));

  // bob's peer connection vanishes without signalling (a crashed tab): alice's canvas and mix
  // keep going, and the server ends his call with a BYE (at once when the DTLS close arrives,
  // else when his leg times out).
  await inPage(bob.page, bob.label, 'drop the peer connection', () => window.phone.dropMedia());
  await awaitRoomMedia(alice, diag, await stats(alice));
  await inPage(bob.page, bob.label, "session 'ended' by the server's BYE", (ms) => window.phone.waitFor('ended', ms), SERVER_BYE_MS, SERVER_BYE_MS);
  await watcher.until('with alice alone', (b) => b.includes('<user-count>1</user-count>'));
  const alone = await stats(alice);
  diag(`alice alone: ${fmt(alone)}`);

  await inPage(alice.page, alice.label, 'hang up (BYE)', () => window.phone.hangup());
  await inPage(alice.page, alice.label, "session 'ended'", (ms) => window.phone.waitFor('ended', ms), WAIT_MS);
  await watcher.until('of the emptied room', (b) => b.includes('<user-count>0</user-count>') && watcher.bodies.length > 3);
});

test(`conference: a missing or wrong PIN for sip:${ROOM} is refused with 403`, async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());
  for (const [uri, why] of [
    [`sip:${ROOM}@${tg.domain}`, 'no PIN'],
    [`sip:${ROOM}@${tg.domain};pin=0000`, 'wrong PIN'],
  ]) {
    const p = await join(browser, server.origin, tg, 'carol', 'jssip', cleanup, diag, uri);
    const r = await inPage(p.page, p.label, `${why}: call 'failed'`, (ms) => window.phone.waitFor('failed', ms, ['established']), WAIT_MS);
    diag(`${p.label} ${why}: ${JSON.stringify(r.detail)}`);
    assert.equal(r.detail.status, 403, `${why}: 403`);
  }
});
