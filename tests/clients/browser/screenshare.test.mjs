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
import { target, WAIT_MS } from '../lib/env.mjs';
import { cleanupAll } from '../lib/wait.mjs';
import { launchChromium } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { inPage, openPhone, openLine, onLine, lineStats, lineWait, awaitRelayedScreen } from '../lib/screen-lines.mjs';

const ROOM = process.env.HUDDLE_ROOM || 'team';
const joinRoom = (browser, origin, tg, name, lib, cleanup, diag) => openPhone(browser, origin, tg, name, lib, ROOM, cleanup, diag);

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
