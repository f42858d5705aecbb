// The conference composite follows a shared screen, in headless Chromium. Run by
// tests/tests/conference_presenter.rs, which starts Huddle with the conference plugin (room
// `team`, no PIN, a 320x180 grid composite) and the screenshare relay (screen URI
// sip:team-screen@<domain>; carol may present in any room by role).
//
// alice (JsSIP) and bob (SIP.js) are in the room with their cameras: the composite they receive
// is a 2x1 grid, two 16:9 tiles across the middle, black above and below. carol (a third call,
// JsSIP, not a participant) shares her screen (getDisplayMedia, Chromium's fake screen) to the
// room's screen URI, and bob watches it on a line of his own. What must hold, read from the
// decoded composite's pixels in alice's and bob's pages (the <video> drawn to a canvas):
//   * while carol shares, both composites switch to the presenter layout: the screen fills the
//     top-centre band (black in the grid) and the participants become thumbnails along the
//     bottom (black in the grid);
//   * carol hanging up brings the grid back for both (top and bottom black again), and ends
//     bob's viewing call cleanly with a BYE from the server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target, WAIT_MS } from '../lib/env.mjs';
import { cleanupAll } from '../lib/wait.mjs';
import { launchChromium } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { awaitComposite, isGrid, DRAWN } from '../lib/composite.mjs';
import { inPage, openPhone, openLine, onLine, lineWait } from '../lib/screen-lines.mjs';

const ROOM = process.env.HUDDLE_ROOM || 'team';

test(`conference: the composite of ${ROOM} switches to the presenter layout while a screen is shared, and back after`, async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const screenUri = `sip:${ROOM}-screen@${tg.domain}`;
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());

  const alice = await openPhone(browser, server.origin, tg, 'alice', 'jssip', ROOM, cleanup, diag);
  const bob = await openPhone(browser, server.origin, tg, 'bob', 'sipjs', ROOM, cleanup, diag);
  const participants = [alice, bob];

  // Before: the grid (both cameras in the middle band, black above and below).
  const before = {};
  for (const p of participants) before[p.name] = await awaitComposite(p, 'as a grid of two', isGrid, diag);

  // carol shares her screen; bob also watches it on a line of his own.
  const carol = await openPhone(browser, server.origin, tg, 'carol', null, ROOM, cleanup, diag);
  await openLine(carol, tg, 'present', cleanup);
  const shared = await onLine(carol, 'present', 'getDisplayMedia + INVITE', (a) => window.screenLines[a.line].present(a.arg), screenUri);
  diag(`carol shares a ${shared.width}x${shared.height} screen`);
  await lineWait(carol, 'present', 'established', ['failed', 'ended']);
  await openLine(bob, tg, 'view', cleanup);
  await onLine(bob, 'view', 'INVITE (recvonly)', (a) => window.screenLines[a.line].view(a.arg), screenUri);
  await lineWait(bob, 'view', 'established', ['failed', 'ended']);

  // During: the presenter layout — the screen in the top band, thumbnails along the bottom.
  for (const p of participants) {
    const b = before[p.name];
    const during = await awaitComposite(
      p,
      'in the presenter layout',
      (s) => s.top > b.top + DRAWN && s.bottom > b.bottom + DRAWN,
      diag,
    );
    assert.equal(during.w, b.w, 'the same canvas, re-laid out');
    // It keeps moving (the canvas is not frozen by the screen).
    await awaitComposite(p, 'still decoding', (s) => s.framesDecoded > during.framesDecoded, diag);
  }

  // carol stops: the viewer's call ends cleanly and both composites go back to the grid.
  await onLine(carol, 'present', 'hang up', (a) => window.screenLines[a.line].hangup());
  const over = await lineWait(bob, 'view', 'ended', ['failed']);
  diag(`bob's view after carol stopped: ${JSON.stringify(over.detail)}`);
  assert.equal(over.detail.originator, 'remote', "the server's BYE ended bob's view");
  for (const p of participants) {
    const after = await awaitComposite(p, 'back to the grid', isGrid, diag);
    assert.ok(Math.abs(after.top - before[p.name].top) < DRAWN, `${p.label}: the top band is background again`);
  }

  for (const p of participants) {
    await inPage(p.page, p.label, 'leave the room (BYE)', () => window.phone.hangup());
    await inPage(p.page, p.label, "session 'ended'", (ms) => window.phone.waitFor('ended', ms), WAIT_MS);
  }
});
