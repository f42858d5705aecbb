// Presenting by calling the room itself, in headless Chromium. Run by
// tests/tests/conference_present_to_room.rs, which starts Huddle with the conference plugin (room
// `team`, no PIN, a 320x180 grid composite) and the screenshare relay (screen URI
// sip:team-screen@<domain>, no presenters by role).
//
// alice (JsSIP) and bob (SIP.js) are in the room with their cameras. alice then makes a second,
// video-only call with a getDisplayMedia track to the ROOM URI (what SIPml5's call-screenshare to
// the room sends): the conference retargets it to the relay (ABI 1.4), so it becomes the room's
// presentation. What must hold:
//   * both composites switch to the presenter layout (the screen in the top band, thumbnails
//     along the bottom; the same luma bands conference-presenter.test.mjs reads);
//   * alice's screen call is answered by the relay (sendonly for her: the relay sends nothing
//     back), and bob, watching the screen URI, decodes frames at the size alice's encoder sends;
//   * alice hanging up her screen call brings the grid back and ends bob's viewing call;
//   * carol, who is not in the room, making the same video-only call to the room URI joins it as
//     a participant (sendrecv: she receives the composite), not as a presenter.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { onLine, lineStats, lineWait, awaitRelayedScreen, MEDIA_MS } from '../lib/screen-lines.mjs';
import { awaitComposite, isPresenting } from '../lib/composite.mjs';
import { openRoomOfTwo, shareScreen, watchScreen, stopSharing, leaveRoom } from '../lib/presenter-room.mjs';

const ROOM = process.env.HUDDLE_ROOM || 'team';

/** Polls line `line` of `who` until its stats satisfy `pred` (bounded by MEDIA_MS). */
async function awaitLine(who, line, what, pred) {
  const deadline = Date.now() + MEDIA_MS;
  let last = null;
  while (Date.now() < deadline) {
    last = await lineStats(who, line);
    if (last && pred(last)) return last;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${who.label}: ${line}: timed out after ${MEDIA_MS} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
}

test(`conference: a participant's video-only call to ${ROOM} becomes its presentation; a stranger's joins`, async (t) => {
  const room = await openRoomOfTwo(t, ROOM);
  const { alice, bob, participants, before, diag } = room;

  // alice shares her screen by calling the room again, video only.
  await shareScreen(room, alice, 'present', room.roomUri);
  const presenting = await lineStats(alice, 'present');
  assert.deepEqual(presenting.directions, ['sendonly'], 'the relay answered her screen call (it sends nothing back)');

  for (const p of participants) {
    const during = await awaitComposite(p, 'in the presenter layout', isPresenting(before[p.name]), diag);
    assert.equal(during.w, before[p.name].w, 'the same canvas, re-laid out');
  }

  // bob watches at the screen URI: alice's frames, at her size.
  await watchScreen(room, bob);
  await awaitRelayedScreen(bob, alice, diag);

  // alice stops sharing: bob's view ends with a BYE from the server, the grid comes back.
  await stopSharing(room, alice, 'present', bob);

  // carol is not in the room: her video-only call to it is a participant's, composite and all.
  const carol = await room.joinAs('carol', null);
  await shareScreen(room, carol, 'screen', room.roomUri);
  const joined = await awaitLine(carol, 'screen', 'the composite decoding', (s) => s.inbound?.framesDecoded > 0);
  diag(`carol's video-only call to the room: ${JSON.stringify(joined)}`);
  assert.deepEqual(joined.directions, ['sendrecv'], 'the conference answered her (she receives the composite)');
  await onLine(carol, 'screen', 'hang up', (a) => window.screenLines[a.line].hangup());
  await lineWait(carol, 'screen', 'ended', ['failed']);

  await leaveRoom(room);
});
