// The admin API's rooms endpoints against real participants: JsSIP and SIP.js in headless Chromium
// call the room sip:ops@<domain> served by the conference plugin, and the admin API (the bearer token
// from HUDDLE_ADMIN_TOKEN, at HUDDLE_ADMIN_URL) lists the room and its participants, locks it (a new
// caller is refused with 403), mutes and unmutes a participant, changes the layout, and kicks a
// participant, whose call then ends with a BYE from the server. /metrics counts the room, its
// participants and media packets that keep rising. Errors are JSON {code, message}. Run by
// tests/tests/admin_rooms.rs, which also checks the webhook events the room raised.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target, user, WAIT_MS, PAGE_MS } from '../lib/env.mjs';
import { withTimeout, cleanupAll } from '../lib/wait.mjs';
import { launchChromium, newPhoneContext } from '../lib/chromium.mjs';
import { startStaticServer } from '../lib/static-server.mjs';

const MEDIA_MS = Number(process.env.HUDDLE_MEDIA_TIMEOUT_MS || 60000);
const ROOM = 'ops';
const ADMIN = process.env.HUDDLE_ADMIN_URL;
const TOKEN = process.env.HUDDLE_ADMIN_TOKEN;

/** One admin call; returns { status, body } with the body parsed as JSON when it is JSON. */
async function admin(method, path, { body, token = TOKEN } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await withTimeout(
    fetch(`${ADMIN}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }),
    `admin ${method} ${path}`,
    WAIT_MS,
  );
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: r.status, body: json };
}

async function ok(method, path, opts) {
  const r = await admin(method, path, opts);
  assert.equal(r.status, 200, `${method} ${path}: ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Polls GET `path` until `pred(body)` holds (the plugin answers on its own thread), bounded. */
async function until(path, what, pred) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  while (Date.now() < deadline) {
    last = await admin('GET', path);
    if (last.status === 200 && pred(last.body)) return last.body;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`GET ${path}: never ${what}; last: ${last?.status} ${JSON.stringify(last?.body)}`);
}

function expectError(r, status, code, what) {
  assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.code, code, `${what}: code`);
  assert.equal(typeof r.body.message, 'string', `${what}: a message`);
}

function metric(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function inPage(page, label, what, fn, arg, ms = WAIT_MS) {
  try {
    return await withTimeout(page.evaluate(fn, arg), `${label}: ${what}`, ms + 2000);
  } catch (e) {
    const msg = String(e?.message ?? e).replace(/^page\.evaluate: Error: /, '');
    throw new Error(msg.startsWith(label) ? msg : `${label}: ${what}: ${msg}`);
  }
}

async function join(browser, origin, tg, name, lib, cleanup, log) {
  const label = `${name}[${lib}]`;
  const { context, page } = await newPhoneContext(browser, origin, label, log);
  cleanup.push(() => context.close());
  await withTimeout(page.goto(`${origin}/`), `${label}: page load`, PAGE_MS);
  await page.waitForFunction(() => window.phoneReady === true, null, { timeout: PAGE_MS });
  cleanup.push(() => inPage(page, label, 'stop', (ms) => window.phone.stop(ms), 3000, 3000).catch(() => {}));
  const u = user(tg, name);
  const o = { lib, wsUrl: tg.wsUrl, uri: u.aor, user: u.name, password: u.password, autoAnswer: false, label };
  await inPage(page, label, 'registered', (a) => window.phone.start(a.o, a.ms), { o, ms: WAIT_MS });
  await inPage(page, label, 'INVITE sent', (to) => window.phone.call(to), `sip:${ROOM}@${tg.domain}`);
  return { page, label };
}

test(`admin API: list, participants, lock, mute, layout and kick in sip:${ROOM}`, async (t) => {
  assert.ok(ADMIN && TOKEN, 'HUDDLE_ADMIN_URL and HUDDLE_ADMIN_TOKEN are set');
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const diag = (l) => t.diagnostic(l);
  const tg = target();
  const server = await startStaticServer();
  cleanup.push(() => server.close());
  const browser = await launchChromium();
  cleanup.push(() => browser.close());

  // No rooms yet; errors are JSON.
  assert.deepEqual(await ok('GET', '/rooms'), { rooms: [] });
  expectError(await admin('GET', `/rooms/${ROOM}`), 404, 'not_found', 'a room nobody is in');
  expectError(await admin('GET', '/rooms', { token: null }), 401, 'unauthorized', 'no token');

  // alice (JsSIP) and bob (SIP.js) join; the list and the participants reflect it.
  const alice = await join(browser, server.origin, tg, 'alice', 'jssip', cleanup, diag);
  await inPage(alice.page, alice.label, "call 'established'", (ms) => window.phone.waitFor('established', ms, ['failed', 'ended']), MEDIA_MS, MEDIA_MS);
  await until('/rooms', 'listing ops with 1 participant', (b) => b.rooms.some((r) => r.name === ROOM && r.participants === 1));
  const bob = await join(browser, server.origin, tg, 'bob', 'sipjs', cleanup, diag);
  await inPage(bob.page, bob.label, "call 'established'", (ms) => window.phone.waitFor('established', ms, ['failed', 'ended']), MEDIA_MS, MEDIA_MS);
  const room = await until(`/rooms/${ROOM}`, 'listing alice and bob', (b) => b.participants.length === 2);
  diag(`room: ${JSON.stringify(room)}`);
  assert.deepEqual(room.participants.map((p) => p.entity).sort(), ['alice', 'bob']);
  assert.equal(room.locked, false);
  const aliceId = room.participants.find((p) => p.entity === 'alice').id;
  const list = await ok('GET', '/rooms');
  assert.deepEqual(list.rooms, [{ name: ROOM, participants: 2, locked: false, layout: 'grid', on_demand: false }]);

  // /metrics: the room and its participants, and media packets that keep rising.
  const m1 = (await admin('GET', '/metrics')).body;
  assert.equal(metric(m1, 'huddle_rooms'), 1, 'one room');
  assert.equal(metric(m1, `huddle_room_participants{room="${ROOM}"}`), 2, 'two participants');
  await new Promise((r) => setTimeout(r, 1500));
  const m2 = (await admin('GET', '/metrics')).body;
  for (const series of ['huddle_media_packets_total{direction="in"}', 'huddle_media_packets_total{direction="out"}', 'huddle_media_bytes_total{direction="in"}']) {
    assert.ok(metric(m2, series) > metric(m1, series), `${series} rises with traffic: ${metric(m1, series)} → ${metric(m2, series)}`);
  }
  assert.ok(metric(m2, 'huddle_connections{transport="ws"}') >= 2, 'the WebSocket connections are counted');
  // UDP segmentation offload is reported (loopback takes it, or the probe turned it off: either
  // way no group was refused and re-sent).
  assert.equal(typeof metric(m2, 'huddle_media_gso_sends_total'), 'number', 'GSO sends are reported');
  assert.equal(metric(m2, 'huddle_media_gso_fallbacks_total'), 0, 'no offloaded send was refused');
  // The room asked each newcomer for a key frame (a PLI): it shows once the media engine's stats
  // (every 5 s) have come round.
  const plis = 'huddle_media_plis_total{direction="sent"}';
  const deadline = Date.now() + MEDIA_MS;
  let m3 = m2;
  while (!(metric(m3, plis) > 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    m3 = (await admin('GET', '/metrics')).body;
  }
  assert.ok(metric(m3, plis) > 0, `${plis} counts the key-frame requests sent`);
  // The room's mixer CPU (rewritten every second here, stats_interval_secs = 1) keeps rising
  // while two participants send video.
  const cpu = `huddle_room_mixer_cpu_seconds_total{room="${ROOM}"}`;
  const cpuUntil = async (above) => {
    const until = Date.now() + MEDIA_MS;
    let text = (await admin('GET', '/metrics')).body;
    while (!(metric(text, cpu) > above) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
      text = (await admin('GET', '/metrics')).body;
    }
    return metric(text, cpu);
  };
  const cpu1 = await cpuUntil(0);
  assert.ok(cpu1 > 0, `${cpu} is reported: ${cpu1}`);
  const cpu2 = await cpuUntil(cpu1);
  assert.ok(cpu2 > cpu1, `${cpu} rises while the room mixes: ${cpu1} → ${cpu2}`);
  diag(`room mixer CPU ${cpu1} s → ${cpu2} s`);
  diag(`PLIs sent ${metric(m3, plis)}, received ${metric(m3, 'huddle_media_plis_total{direction="received"}')}, NACKs sent ${metric(m3, 'huddle_media_nacks_total{direction="sent"}')}`);

  // Lock: carol is refused with 403; those inside stay. Unlock.
  assert.deepEqual(await ok('POST', `/rooms/${ROOM}/lock`), { room: ROOM, locked: true });
  const carol = await join(browser, server.origin, tg, 'carol', 'jssip', cleanup, diag);
  const refused = await inPage(carol.page, carol.label, "call 'failed' (room locked)", (ms) => window.phone.waitFor('failed', ms, ['established']), WAIT_MS);
  assert.equal(refused.detail.status, 403, `a locked room refuses: ${JSON.stringify(refused.detail)}`);
  assert.equal((await ok('GET', `/rooms/${ROOM}`)).participants.length, 2, 'nobody else got in');
  assert.deepEqual(await ok('DELETE', `/rooms/${ROOM}/lock`), { room: ROOM, locked: false });

  // Mute and unmute alice.
  assert.deepEqual(await ok('POST', `/rooms/${ROOM}/participants/${aliceId}/mute`), { room: ROOM, participant: aliceId, muted: true });
  assert.equal((await ok('GET', `/rooms/${ROOM}`)).participants.find((p) => p.id === aliceId).muted, true);
  assert.deepEqual(await ok('DELETE', `/rooms/${ROOM}/participants/${aliceId}/mute`), { room: ROOM, participant: aliceId, muted: false });

  // Layout.
  assert.deepEqual(await ok('PUT', `/rooms/${ROOM}/layout`, { body: { layout: 'speaker' } }), { room: ROOM, layout: 'speaker' });
  assert.equal((await ok('GET', `/rooms/${ROOM}`)).layout, 'speaker');
  expectError(await admin('PUT', `/rooms/${ROOM}/layout`, { body: { layout: 'mosaic' } }), 400, 'bad_request', 'an unknown layout');

  // Errors name what is missing.
  expectError(await admin('DELETE', `/rooms/${ROOM}/participants/999999999`), 404, 'not_found', 'kick a stranger');
  expectError(await admin('POST', '/rooms/nope/lock'), 404, 'not_found', 'lock a room nobody is in');

  // Kick alice: her call ends with the server's BYE; bob stays.
  assert.deepEqual(await ok('DELETE', `/rooms/${ROOM}/participants/${aliceId}`), { room: ROOM, participant: aliceId, kicked: true });
  const ended = await inPage(alice.page, alice.label, "session 'ended' by the server's BYE", (ms) => window.phone.waitFor('ended', ms, ['failed']), WAIT_MS);
  diag(`alice ended: ${JSON.stringify(ended.detail)}`);
  assert.equal(ended.detail.originator, 'remote', 'the room ended the call (a BYE came in)');
  const after = await until(`/rooms/${ROOM}`, 'without alice', (b) => b.participants.length === 1);
  assert.equal(after.participants[0].entity, 'bob');

  // bob leaves: the room ends.
  await inPage(bob.page, bob.label, 'hang up (BYE)', () => window.phone.hangup());
  await inPage(bob.page, bob.label, "session 'ended'", (ms) => window.phone.waitFor('ended', ms), WAIT_MS);
  await until('/rooms', 'empty', (b) => b.rooms.length === 0);
});
