// A conference room watched while someone presents, for the browser tests whose composite switches
// to the presenter layout (tests/clients/browser/conference-presenter*.test.mjs): the pages and
// calls they all set up, the presentation's start and end as both the presenter and a viewer see
// them, and leaving the room. The checks stay here, not in each test, so that the tests cannot
// drift apart in what they require of the same steps.

import assert from 'node:assert/strict';
import { target, WAIT_MS } from './env.mjs';
import { cleanupAll } from './wait.mjs';
import { launchChromium } from './chromium.mjs';
import { startStaticServer } from './static-server.mjs';
import { inPage, openPhone, openLine, onLine, lineWait } from './screen-lines.mjs';
import { awaitComposite, isGrid, DRAWN } from './composite.mjs';

/**
 * Sets up room `room` for test `t`: a static server for the phone page and Chromium (both closed
 * after the test, with everything else pushed on the returned `cleanup`), alice (JsSIP) and bob
 * (SIP.js) in the room with their cameras, and the grid of two each of them decodes before
 * anyone presents (`before`, by name).
 */
export async function openRoomOfTwo(t, room) {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());

  const alice = await openPhone(browser, server.origin, tg, 'alice', 'jssip', room, cleanup, diag);
  const bob = await openPhone(browser, server.origin, tg, 'bob', 'sipjs', room, cleanup, diag);
  const participants = [alice, bob];
  const before = {};
  for (const p of participants) before[p.name] = await awaitComposite(p, 'as a grid of two', isGrid, diag);
  return {
    cleanup,
    diag,
    tg,
    roomUri: `sip:${room}@${tg.domain}`,
    screenUri: `sip:${room}-screen@${tg.domain}`,
    joinAs: (name, lib) => openPhone(browser, server.origin, tg, name, lib, room, cleanup, diag),
    alice,
    bob,
    participants,
    before,
  };
}

/**
 * `who` calls `uri` video only with a getDisplayMedia track on screen line `line` and waits for
 * the call to be established. Returns the size of the shared screen.
 */
export async function shareScreen(room, who, line, uri) {
  await openLine(who, room.tg, line, room.cleanup);
  const shared = await onLine(who, line, `getDisplayMedia + INVITE to ${uri}`, (a) => window.screenLines[a.line].present(a.arg), uri);
  room.diag(`${who.name} shares a ${shared.width}x${shared.height} screen to ${uri}`);
  await lineWait(who, line, 'established', ['failed', 'ended']);
  return shared;
}

/** `viewer` watches the room's screen URI (recvonly) on screen line `view`, established. */
export async function watchScreen(room, viewer) {
  await openLine(viewer, room.tg, 'view', room.cleanup);
  await onLine(viewer, 'view', 'INVITE (recvonly)', (a) => window.screenLines[a.line].view(a.arg), room.screenUri);
  await lineWait(viewer, 'view', 'established', ['failed', 'ended']);
}

/**
 * `presenter` hangs up screen line `line`: `viewer`'s viewing call must end with the server's BYE
 * and every participant's composite must go back to the grid (the top band background again).
 */
export async function stopSharing(room, presenter, line, viewer) {
  await onLine(presenter, line, 'hang up', (a) => window.screenLines[a.line].hangup());
  const over = await lineWait(viewer, 'view', 'ended', ['failed']);
  room.diag(`${viewer.name}'s view after ${presenter.name} stopped: ${JSON.stringify(over.detail)}`);
  assert.equal(over.detail.originator, 'remote', `the server's BYE ended ${viewer.name}'s view`);
  for (const p of room.participants) {
    const after = await awaitComposite(p, 'back to the grid', isGrid, room.diag);
    assert.ok(Math.abs(after.top - room.before[p.name].top) < DRAWN, `${p.label}: the top band is background again`);
  }
}

/** Every participant hangs up its camera call and sees it end. */
export async function leaveRoom(room) {
  for (const p of room.participants) {
    await inPage(p.page, p.label, 'leave the room (BYE)', () => window.phone.hangup());
    await inPage(p.page, p.label, "session 'ended'", (ms) => window.phone.waitFor('ended', ms), WAIT_MS);
  }
}
