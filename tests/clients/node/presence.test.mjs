// Presence with real clients in plain Node against a Huddle that loads the presence plugin
// (plugins/presence): SIP.js publishes (Publisher: PUBLISH with SIP-ETag/SIP-If-Match), JsSIP and
// SIP.js subscribe (Subscriber), all over WebSocket. Needs a server configured with the plugin:
// tests/tests/presence_clients.rs starts one (not part of run-all.sh's default set for that reason).
//
// JsSIP 3.13 has no PUBLISH API (only Subscriber/Notifier), so the publishers are SIP.js.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { target } from '../lib/env.mjs';
import { cleanupAll, once, withTimeout } from '../lib/wait.mjs';
import { startJsSIP, stopJsSIP } from '../lib/jssip-node.mjs';
import { startSipJs, UserAgent } from '../lib/sipjs-node.mjs';
import { Publisher, Subscriber } from 'sip.js';

const PIDF = 'application/pidf+xml';

function pidf(aor, id, basic, note) {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="${aor}">` +
    `<tuple id="${id}"><status><basic>${basic}</basic></status></tuple>` +
    `<note>${note}</note></presence>`
  );
}

/** A JsSIP subscription; NOTIFY bodies are emitted as 'notify' on `notes`. */
function jssipSubscribe(cleanup, client, targetUri, event = 'presence', accept = PIDF) {
  const notes = new EventEmitter();
  const sub = client.ua.subscribe(targetUri, event, accept, { expires: 600 });
  // JsSIP's UA does not track subscribers, and a live one keeps its refresh timer (and so the Node
  // process) alive: unsubscribe in cleanup (cleanupAll runs steps in reverse, so before the UA
  // stops), and drop the timer if the transport is already gone.
  cleanup.push(() => {
    try {
      sub.terminate();
    } catch {
      // Already terminated, or never started.
    }
    clearTimeout(sub._expires_timer);
  });
  sub.on('notify', (isFinal, request, body) => notes.emit('notify', { isFinal, body, state: request.getHeader('Subscription-State') }));
  sub.on('terminated', (code, reason) => notes.emit('terminated', { code, reason }));
  sub.subscribe();
  return { sub, notes, label: `${client.label} → ${targetUri} (${event})` };
}

/** A SIP.js subscription; NOTIFY bodies are emitted as 'notify' on `notes`. */
async function sipjsSubscribe(cleanup, client, targetUri, event = 'presence', accept = PIDF) {
  const notes = new EventEmitter();
  const sub = new Subscriber(client.ua, UserAgent.makeURI(targetUri), event, {
    expires: 600,
    extraHeaders: [`Accept: ${accept}`],
  });
  sub.delegate = {
    onNotify: (notification) => {
      notification.accept().catch(() => {});
      notes.emit('notify', { body: notification.request.body, state: notification.request.getHeader('Subscription-State') });
    },
  };
  cleanup.push(() => withTimeout(sub.dispose(), `${client.label}: SIP.js subscriber disposed`, 3000));
  await sub.subscribe();
  return { sub, notes, label: `${client.label} → ${targetUri} (${event})` };
}

/** The next NOTIFY whose body satisfies `pred`. */
function notified(s, what, pred = () => true) {
  return once(s.notes, 'notify', `${s.label}: NOTIFY ${what}`, { filter: (n) => pred(n.body) });
}

/** The final response to the next PUBLISH this SIP.js client sends (after any 407). */
function publishAnswered(client, what) {
  return once(client.events, 'in', `${client.label}: final response to PUBLISH ${what}`, {
    filter: (t) =>
      /^SIP\/2\.0 [2-6]\d\d /.test(t) && /^CSeq:\s*\d+\s+PUBLISH\s*$/im.test(t) && !/^SIP\/2\.0 40[17] /.test(t),
  });
}

async function publish(client, publisher, body, what) {
  const answered = publishAnswered(client, what);
  await publisher.publish(body);
  const raw = await answered;
  assert.match(raw, /^SIP\/2\.0 200 /, `${what}: ${raw.split('\r\n')[0]}`);
  assert.match(raw, /^SIP-ETag:\s*\S+/im, `${what}: a SIP-ETag`);
  return raw;
}

const count = (s, needle) => s.split(needle).length - 1;

test('SIP.js publishes from two devices; JsSIP and SIP.js watchers see the composition, the unpublish, and closed when the last WebSocket goes', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();
  const bobAor = `sip:bob@${tg.domain}`;

  const laptop = await startSipJs(tg, 'bob', cleanup, { label: 'bob-laptop' });
  const phone = await startSipJs(tg, 'bob', cleanup, { label: 'bob-phone', outbound: true });
  const alice = await startJsSIP(tg, 'alice', cleanup);
  const carol = await startSipJs(tg, 'carol', cleanup);

  // Registered and nothing published: open.
  const a = jssipSubscribe(cleanup, alice, bobAor);
  const aFirst = await notified(a, 'with the initial state');
  assert.match(aFirst.body, /<basic>open<\/basic>/);
  assert.match(aFirst.state, /^active;expires=\d+/);
  const c = await sipjsSubscribe(cleanup, carol, bobAor);
  // SIP.js resolves subscribe() on sending; its first NOTIFY follows.
  await notified(c, 'with the initial state', (b) => /<basic>open<\/basic>/.test(b));

  const pub1 = new Publisher(laptop.ua, UserAgent.makeURI(bobAor), 'presence', { expires: 600, contentType: PIDF });
  const pub2 = new Publisher(phone.ua, UserAgent.makeURI(bobAor), 'presence', { expires: 600, contentType: PIDF });
  cleanup.push(
    () => withTimeout(pub1.dispose(), 'bob-laptop: publisher disposed', 3000),
    () => withTimeout(pub2.dispose(), 'bob-phone: publisher disposed', 3000),
  );

  let aSeen = notified(a, 'with the laptop note', (b) => b.includes('on the laptop'));
  let cSeen = notified(c, 'with the laptop note', (b) => b.includes('on the laptop'));
  await publish(laptop, pub1, pidf(bobAor, 'laptop', 'open', 'on the laptop'), 'from the laptop');
  await Promise.all([aSeen, cSeen]);

  // Two devices: one document with both tuples, the open one first.
  aSeen = notified(a, 'with both devices', (b) => b.includes('on the laptop') && b.includes('phone in pocket'));
  cSeen = notified(c, 'with both devices', (b) => b.includes('on the laptop') && b.includes('phone in pocket'));
  await publish(phone, pub2, pidf(bobAor, 'phone', 'closed', 'phone in pocket'), 'from the phone');
  const both = await aSeen;
  await cSeen;
  assert.equal(count(both.body, '<tuple '), 2, both.body);
  assert.ok(both.body.indexOf('id="laptop"') < both.body.indexOf('id="phone"'), `open first:\n${both.body}`);

  // Modify from the phone (body + SIP-If-Match).
  aSeen = notified(a, 'with the modified phone note', (b) => b.includes('phone on the desk'));
  await publish(phone, pub2, pidf(bobAor, 'phone', 'open', 'phone on the desk'), 'modify from the phone');
  await aSeen;

  // The laptop unpublishes: the phone's publication remains.
  aSeen = notified(a, 'without the laptop', (b) => !b.includes('on the laptop') && b.includes('phone on the desk'));
  const unpublished = once(laptop.events, 'in', 'bob-laptop: 200 to the removing PUBLISH', {
    filter: (t) => /^SIP\/2\.0 200 /.test(t) && /^CSeq:\s*\d+\s+PUBLISH\s*$/im.test(t) && /^Expires:\s*0\s*$/im.test(t),
  });
  await pub1.unpublish();
  await unpublished;
  await aSeen;

  // The laptop goes; the phone's WebSocket drops without unregistering: closed at once, and the
  // phone's publication (made over that connection) is gone with it.
  await laptop.ua.stop();
  aSeen = notified(a, 'closed after the last WebSocket went', (b) => /<basic>closed<\/basic>/.test(b) && !b.includes('phone'));
  cSeen = notified(c, 'closed after the last WebSocket went', (b) => /<basic>closed<\/basic>/.test(b) && !b.includes('phone'));
  await phone.ua.transport.disconnect();
  await Promise.all([aSeen, cSeen]);

  // Unsubscribe: a final NOTIFY ends JsSIP's subscription.
  const ended = once(a.notes, 'terminated', `${a.label}: terminated after unsubscribe`);
  a.sub.terminate();
  await ended;
});

test('a browser that reconnects is one watcher, not two (watcher info)', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();
  const bobAor = `sip:bob@${tg.domain}`;
  const aliceAor = `sip:alice@${tg.domain}`;
  const listed = (b) => count(b, `>${aliceAor}</watcher>`);

  const bob = await startSipJs(tg, 'bob', cleanup);
  const w = await sipjsSubscribe(cleanup, bob, bobAor, 'presence.winfo', 'application/watcherinfo+xml');
  const empty = await notified(w, 'with an empty watcher list');
  assert.equal(listed(empty.body), 0, empty.body);

  const tab1 = await startJsSIP(tg, 'alice', cleanup, { label: 'alice-tab' });
  let seen = notified(w, 'listing alice', (b) => listed(b) === 1);
  jssipSubscribe(cleanup, tab1, bobAor);
  await seen;

  // The tab's WebSocket dies (no unregister, no unsubscribe): alice is no watcher any more.
  seen = notified(w, 'without alice after her connection dropped', (b) => listed(b) === 0);
  tab1.socket.terminate();
  await seen;
  await withTimeout(stopJsSIP(tab1), 'alice-tab: stopped');

  // The reloaded tab subscribes again: alice is listed exactly once.
  const tab2 = await startJsSIP(tg, 'alice', cleanup, { label: 'alice-tab-reloaded' });
  seen = notified(w, 'listing alice once after the reconnect', (b) => listed(b) >= 1);
  const s2 = jssipSubscribe(cleanup, tab2, bobAor);
  const open = notified(s2, 'bob open', (b) => /<basic>open<\/basic>/.test(b));
  const again = await seen;
  assert.equal(listed(again.body), 1, again.body);
  await open;
});
