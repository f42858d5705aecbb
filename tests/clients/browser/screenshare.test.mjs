// Screen sharing in headless Chromium, through the screenshare relay plugin. Run by
// tests/tests/screenshare_browser.rs, which starts Huddle with the conference plugin (room `team`,
// no PIN) and the screenshare plugin (screen URI sip:team-screen@<domain>, a second presenter is
// refused).
//
// alice (JsSIP) and bob (SIP.js) join the room with their cameras; the relay learns that from the
// conference plugin's room record. alice then shares her screen (getDisplayMedia: Chromium's fake
// 1280x720 screen) with a second JsSIP line to sip:team-screen@<domain>; bob watches it on a line of
// his own (recvonly). What must hold:
//   * bob decodes frames, rising, at exactly the resolution alice's encoder sends (relayed as-is);
//   * bob joining makes the relay ask alice for a key frame (her encoder counts the PLI), so his
//     first picture does not wait for her next periodic key frame;
//   * bob presenting meanwhile is refused with 403 naming alice; carol, not in the room, may not watch;
//   * alice hanging up her screen line ends bob's viewing call with a BYE from the server;
//   * alice presenting again and leaving the room (hanging up her camera call) ends her screen call
//     and bob's viewing call.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { target, user, WAIT_MS } from '../lib/env.mjs';
import { withTimeout, cleanupAll } from '../lib/wait.mjs';
import { launchChromium, newPhoneContext } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';

const MEDIA_MS = Number(process.env.HUDDLE_MEDIA_TIMEOUT_MS || 60000);
const ROOM = process.env.HUDDLE_ROOM || 'team';
const LINE_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'screenshare-page.js');

async function inPage(page, label, what, fn, arg, ms = WAIT_MS) {
  try {
    return await withTimeout(page.evaluate(fn, arg), `${label}: ${what}`, ms + 2000);
  } catch (e) {
    const msg = String(e?.message ?? e).replace(/^page\.evaluate: Error: /, '');
    throw new Error(msg.startsWith(label) ? msg : `${label}: ${what}: ${msg}`);
  }
}

/** A page whose phone is registered and in the room, with the screen-line script loaded. */
async function joinRoom(browser, origin, tg, name, lib, cleanup, diag) {
  const label = `${name}[${lib}]`;
  const { context, page } = await newPhoneContext(browser, origin, label, diag);
  cleanup.push(() => context.close());
  await withTimeout(page.goto(`${origin}/`), `${label}: page load`);
  await page.waitForFunction(() => window.phoneReady === true, null, { timeout: WAIT_MS });
  await page.addScriptTag({ path: LINE_SCRIPT });
  cleanup.push(() => inPage(page, label, 'stop', (ms) => window.phone.stop(ms), 3000, 3000).catch(() => {}));
  const u = user(tg, name);
  const o = { lib, wsUrl: tg.wsUrl, uri: u.aor, user: u.name, password: u.password, autoAnswer: false, label };
  await inPage(page, label, 'registered', (a) => window.phone.start(a.o, a.ms), { o, ms: WAIT_MS });
  if (lib) {
    await inPage(page, label, 'INVITE to the room', (to) => window.phone.call(to), `sip:${ROOM}@${tg.domain}`);
    await inPage(page, label, "in the room ('established')", (ms) => window.phone.waitFor('established', ms, ['failed', 'ended']), MEDIA_MS, MEDIA_MS);
  }
  return { page, label, name };
}

/** Opens screen line `line` of `who` (a second JsSIP user agent in the page). */
async function openLine(who, tg, line, cleanup) {
  const u = user(tg, who.name);
  await inPage(
    who.page,
    who.label,
    `screen line '${line}' connected`,
    (a) => {
      window.screenLines[a.line]?.stop();
      window.screenLines[a.line] = new window.ScreenLine(a.line);
      return window.screenLines[a.line].start(a.o, a.ms).then(() => true);
    },
    { line, o: { wsUrl: tg.wsUrl, uri: u.aor, password: u.password }, ms: WAIT_MS },
  );
  cleanup.push(() => inPage(who.page, who.label, 'stop line', (l) => window.screenLines[l]?.stop(), line).catch(() => {}));
}

const onLine = (who, line, what, fn, arg, ms) =>
  inPage(who.page, who.label, `${line}: ${what}`, fn, { line, arg }, ms);
const lineStats = (who, line) => onLine(who, line, 'getStats()', (a) => window.screenLines[a.line].stats());
const lineWait = (who, line, names, failOn, ms = MEDIA_MS) =>
  onLine(who, line, `waiting for ${names}`, (a) => window.screenLines[a.line].waitFor(a.arg.names, a.arg.ms, a.arg.failOn), { names, failOn, ms }, ms);

/**
 * Waits until `viewer` decodes frames at the size `presenter` encodes, then requires decoding to
 * go on (two samples, rising). Polling: there is no event for "frames decoded".
 */
async function awaitRelayedScreen(viewer, presenter, diag) {
  const deadline = Date.now() + MEDIA_MS;
  let first = null;
  let sent = null;
  while (Date.now() < deadline) {
    const s = await lineStats(viewer, 'view');
    sent = (await lineStats(presenter, 'present'))?.outbound;
    if (s?.inbound?.framesDecoded > 0 && sent?.frameWidth > 0 && s.inbound.frameWidth === sent.frameWidth && s.inbound.frameHeight === sent.frameHeight) {
      first = s.inbound;
      break;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  if (!first) {
    throw new Error(
      `${viewer.label}: timed out after ${MEDIA_MS} ms waiting for relayed frames at the presenter's size; viewer: ${JSON.stringify(await lineStats(viewer, 'view'))}; presenter: ${JSON.stringify(sent)}`,
    );
  }
  let second = first;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    second = (await lineStats(viewer, 'view')).inbound;
    if (second.framesDecoded > first.framesDecoded) break;
  }
  diag(`${viewer.label} viewing: ${JSON.stringify(first)} then ${JSON.stringify(second)}; presenter sends ${JSON.stringify(sent)}`);
  assert.ok(second.framesDecoded > first.framesDecoded, `${viewer.label}: relayed frames keep decoding`);
  assert.ok(second.keyFramesDecoded >= 1, `${viewer.label}: a key frame reached the viewer`);
  assert.equal(second.frameWidth, sent.frameWidth, 'the viewer decodes the presenter’s width');
  assert.equal(second.frameHeight, sent.frameHeight, 'the viewer decodes the presenter’s height');
  return second;
}

test(`screenshare: a participant of ${ROOM} shares the screen, a viewer gets it as sent, a second presenter is refused, the end reaches the viewer`, async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const screenUri = `sip:${ROOM}-screen@${tg.domain}`;
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());

  const alice = await joinRoom(browser, server.origin, tg, 'alice', 'jssip', cleanup, diag);
  const bob = await joinRoom(browser, server.origin, tg, 'bob', 'sipjs', cleanup, diag);

  // alice shares.
  await openLine(alice, tg, 'present', cleanup);
  const shared = await onLine(alice, 'present', 'getDisplayMedia + INVITE', (a) => window.screenLines[a.line].present(a.arg), screenUri);
  diag(`alice shares a ${shared.width}x${shared.height} screen`);
  await lineWait(alice, 'present', 'established', ['failed', 'ended']);

  // bob watches, joining after the presentation started: his first picture needs a key frame.
  await openLine(bob, tg, 'view', cleanup);
  const plisBefore = (await lineStats(alice, 'present')).outbound.pliCount;
  const asked = Date.now();
  await onLine(bob, 'view', 'INVITE (recvonly)', (a) => window.screenLines[a.line].view(a.arg), screenUri);
  await lineWait(bob, 'view', 'established', ['failed', 'ended']);
  const seen = await awaitRelayedScreen(bob, alice, diag);
  diag(`bob's first relayed picture within ${Date.now() - asked} ms of his INVITE (key frames decoded: ${seen.keyFramesDecoded})`);
  const presenterSees = await lineStats(alice, 'present');
  assert.ok(
    presenterSees.outbound.pliCount > plisBefore,
    `the relay asked alice for a key frame when bob joined (PLIs at alice: ${plisBefore} before, ${presenterSees.outbound.pliCount} after)`,
  );
  assert.deepEqual(presenterSees.directions, ['sendonly'], 'the relay answers the presenter recvonly');
  assert.deepEqual((await lineStats(bob, 'view')).directions, ['recvonly']);

  // bob may not present while alice does; carol, who is not in the room, may not watch.
  await openLine(bob, tg, 'present', cleanup);
  await onLine(bob, 'present', 'getDisplayMedia + INVITE', (a) => window.screenLines[a.line].present(a.arg), screenUri);
  const refused = await lineWait(bob, 'present', 'failed', ['established']);
  diag(`bob presenting: ${JSON.stringify(refused.detail)}`);
  assert.equal(refused.detail.status, 403);
  assert.equal(refused.detail.reason, `Forbidden - alice Is Presenting In ${ROOM}`);
  const carol = await joinRoom(browser, server.origin, tg, 'carol', null, cleanup, diag);
  await openLine(carol, tg, 'view', cleanup);
  await onLine(carol, 'view', 'INVITE (recvonly)', (a) => window.screenLines[a.line].view(a.arg), screenUri);
  const stranger = await lineWait(carol, 'view', 'failed', ['established']);
  assert.equal(stranger.detail.status, 403);
  assert.equal(stranger.detail.reason, `Forbidden - Join Room ${ROOM} To Watch`);
  // bob is still watching.
  await awaitRelayedScreen(bob, alice, diag);

  // alice stops sharing: bob's viewing call is ended by the server.
  await onLine(alice, 'present', 'hang up', (a) => window.screenLines[a.line].hangup());
  const over = await lineWait(bob, 'view', 'ended', ['failed']);
  diag(`bob's view after alice stopped: ${JSON.stringify(over.detail)}`);
  assert.equal(over.detail.originator, 'remote', "the server's BYE ended bob's view");

  // alice shares again, bob watches again, then alice leaves the room: both screen calls end.
  await openLine(alice, tg, 'present', cleanup);
  await onLine(alice, 'present', 'getDisplayMedia + INVITE', (a) => window.screenLines[a.line].present(a.arg), screenUri);
  await lineWait(alice, 'present', 'established', ['failed', 'ended']);
  await openLine(bob, tg, 'view', cleanup);
  await onLine(bob, 'view', 'INVITE (recvonly)', (a) => window.screenLines[a.line].view(a.arg), screenUri);
  await lineWait(bob, 'view', 'established', ['failed', 'ended']);
  await awaitRelayedScreen(bob, alice, diag);
  await inPage(alice.page, alice.label, 'leave the room (BYE)', () => window.phone.hangup());
  const gone = await lineWait(alice, 'present', 'ended', ['failed']);
  assert.equal(gone.detail.originator, 'remote', "leaving the room ends alice's presentation");
  const over2 = await lineWait(bob, 'view', 'ended', ['failed']);
  assert.equal(over2.detail.originator, 'remote');

  await inPage(bob.page, bob.label, 'leave the room (BYE)', () => window.phone.hangup());
  await inPage(bob.page, bob.label, "session 'ended'", (ms) => window.phone.waitFor('ended', ms), WAIT_MS);
});
