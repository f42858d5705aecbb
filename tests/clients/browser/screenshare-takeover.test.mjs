// A presentation taken over, in headless Chromium, through the screenshare relay. Run by
// tests/tests/screenshare_takeover.rs, which starts Huddle with the conference plugin (room
// `team`) and the relay with its shipped defaults (screen URI sip:screen-team@<domain>) except
// `second_presenter = "take_over"`, `presenters = ["alice", "bob"]` (presenters by role, no seat
// in the room) and `viewers = "anyone"`, so no camera call is needed and the CPU goes to the relay.
//
//   * alice shares Chromium's fake screen; carol watches and decodes it at alice's size;
//   * bob shares a 640x360 green canvas: alice's screen call ends with the server's BYE, carol's
//     viewing call stays up (no re-INVITE, no BYE) and she now decodes bob's 640x360 frames;
//   * the relay's admin state (POST /plugins/screenshare/admin, HUDDLE_ADMIN_URL with
//     HUDDLE_ADMIN_TOKEN) names the presenter and lists carol as a viewer with her loss counters;
//   * bob hangs up: carol's viewing call ends with the server's BYE.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target, WAIT_MS } from '../lib/env.mjs';
import { cleanupAll, withTimeout } from '../lib/wait.mjs';
import { launchChromium } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';
import { openPhone, openLine, onLine, lineWait, lineEvents, awaitRelayedScreen } from '../lib/screen-lines.mjs';

const ROOM = process.env.HUDDLE_ROOM || 'team';
const ADMIN = process.env.HUDDLE_ADMIN_URL;
const TOKEN = process.env.HUDDLE_ADMIN_TOKEN;

/** The relay's running presentations, from its admin command. */
async function presentations() {
  const r = await withTimeout(
    fetch(`${ADMIN}/plugins/screenshare/admin`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'presentations' }),
    }),
    'admin presentations',
    WAIT_MS,
  );
  assert.equal(r.status, 200);
  return (await r.json()).presentations;
}

test(`screenshare: a second presenter takes over ${ROOM}, the first gets a BYE, the viewer keeps watching the new screen`, async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const screenUri = `sip:screen-${ROOM}@${tg.domain}`;
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());

  // Registered phones, not in the room: presenters by role and viewers = anyone need no seat.
  const phones = {};
  for (const name of ['alice', 'bob', 'carol']) phones[name] = await openPhone(browser, server.origin, tg, name, null, ROOM, cleanup, diag);

  // alice presents Chromium's fake screen; carol watches it.
  await openLine(phones.alice, tg, 'present', cleanup);
  const first = await onLine(phones.alice, 'present', 'getDisplayMedia + INVITE', (a) => window.screenLines[a.line].present(a.arg), screenUri);
  diag(`alice shares a ${first.width}x${first.height} screen`);
  await lineWait(phones.alice, 'present', 'established', ['failed', 'ended']);
  await openLine(phones.carol, tg, 'view', cleanup);
  await onLine(phones.carol, 'view', 'INVITE (recvonly)', (a) => window.screenLines[a.line].view(a.arg), screenUri);
  await lineWait(phones.carol, 'view', 'established', ['failed', 'ended']);
  const before = await awaitRelayedScreen(phones.carol, phones.alice, diag);

  // bob takes over with a canvas of another size.
  const canvas = { width: 640, height: 360, color: '#00a040' };
  assert.notEqual(before.frameWidth, canvas.width, "bob's screen must be told apart from alice's by its width");
  await openLine(phones.bob, tg, 'present', cleanup);
  await onLine(phones.bob, 'present', 'canvas + INVITE', (a) => window.screenLines[a.line].presentCanvas(a.arg.uri, a.arg.canvas), { uri: screenUri, canvas });
  await lineWait(phones.bob, 'present', 'established', ['failed', 'ended']);
  const lost = await lineWait(phones.alice, 'present', 'ended', ['failed']);
  diag(`alice's screen call after bob took over: ${JSON.stringify(lost.detail)}`);
  assert.equal(lost.detail.originator, 'remote', "the server's BYE ended alice's presentation");

  // carol's call carries on and shows bob's screen now.
  const after = await awaitRelayedScreen(phones.carol, phones.bob, diag);
  assert.equal(after.frameWidth, canvas.width, "carol decodes bob's canvas width");
  assert.equal(after.frameHeight, canvas.height, "carol decodes bob's canvas height");
  assert.ok(after.framesDecoded > before.framesDecoded, 'the same viewing call went on decoding');
  assert.deepEqual(await lineEvents(phones.carol, 'view'), ['ws-connected', 'established'], "carol's viewing call never ended or failed");

  // The admin state: bob presents, carol watches, with her loss counters.
  const [running, ...others] = await presentations();
  diag(`admin state: ${JSON.stringify(running)}`);
  assert.deepEqual(others, [], 'one presentation');
  assert.equal(running.room, ROOM);
  assert.equal(running.presenter, 'bob');
  assert.equal(running.screen_uri, screenUri);
  assert.equal(running.viewers.length, 1);
  const [viewer] = running.viewers;
  assert.equal(viewer.viewer, 'carol');
  for (const k of ['fraction_lost_percent', 'cumulative_lost', 'reports']) assert.equal(typeof viewer[k], 'number', `${k}: ${JSON.stringify(viewer)}`);
  assert.equal(viewer.lossy, false, 'no loss on loopback');
  // The host passes carol's receiver reports on as one report per stats interval (5 s): they
  // reach the relay, which counts them (the presenter never sees them).
  let reported = viewer;
  for (const until = Date.now() + 20000; !(reported.reports > 0) && Date.now() < until;) {
    await new Promise((r) => setTimeout(r, 250));
    reported = (await presentations())[0]?.viewers?.[0] ?? reported;
  }
  diag(`carol's loss as the relay knows it: ${JSON.stringify(reported)}`);
  assert.ok(reported.reports > 0, `carol's receiver reports reach the relay: ${JSON.stringify(reported)}`);
  assert.equal(reported.lossy, false, 'no loss on loopback');

  // bob stops: carol's view ends with the server's BYE.
  await onLine(phones.bob, 'present', 'hang up', (a) => window.screenLines[a.line].hangup());
  const over = await lineWait(phones.carol, 'view', 'ended', ['failed']);
  assert.equal(over.detail.originator, 'remote', "the server's BYE ended carol's view");
  assert.deepEqual(await presentations(), [], 'nothing runs any more');
});
