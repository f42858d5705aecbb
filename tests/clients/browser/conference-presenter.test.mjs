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
import { awaitComposite, isPresenting } from '../lib/composite.mjs';
import { openRoomOfTwo, shareScreen, watchScreen, stopSharing, leaveRoom } from '../lib/presenter-room.mjs';

const ROOM = process.env.HUDDLE_ROOM || 'team';

test(`conference: the composite of ${ROOM} switches to the presenter layout while a screen is shared, and back after`, async (t) => {
  // Before: the grid (both cameras in the middle band, black above and below).
  const room = await openRoomOfTwo(t, ROOM);
  const { bob, participants, before, diag } = room;

  // carol shares her screen; bob also watches it on a line of his own.
  const carol = await room.joinAs('carol', null);
  await shareScreen(room, carol, 'present', room.screenUri);
  await watchScreen(room, bob);

  // During: the presenter layout — the screen in the top band, thumbnails along the bottom.
  for (const p of participants) {
    const b = before[p.name];
    const during = await awaitComposite(p, 'in the presenter layout', isPresenting(b), diag);
    assert.equal(during.w, b.w, 'the same canvas, re-laid out');
    // It keeps moving (the canvas is not frozen by the screen).
    await awaitComposite(p, 'still decoding', (s) => s.framesDecoded > during.framesDecoded, diag);
  }

  // carol stops: the viewer's call ends cleanly and both composites go back to the grid.
  await stopSharing(room, carol, 'present', bob);

  await leaveRoom(room);
});
