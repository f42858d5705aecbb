// JsSIP 3.13 in plain Node (socket over `ws`): registration, UTF-8 MESSAGE, refresh, unregister, and
// delivery of a MESSAGE to every registered device of a user.
//
// Wire shape JsSIP uses (checked below so a change in the library is noticed): every REGISTER carries
// SIP Outbound parameters by default, without any configuration:
//   Contact: <sip:RANDOM@RANDOM.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:…>";expires=600
//   Supported: path,gruu,outbound
// and the Contact host is a random `.invalid` name, so the server must route to the WebSocket
// connection, never to the Contact host. Each UA has its own random instance id.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target } from '../lib/env.mjs';
import { cleanupAll } from '../lib/wait.mjs';
import {
  startJsSIP,
  lastRegister,
  rawHeader,
  sendJsSIPMessage,
  nextJsSIPMessage,
  refreshJsSIPRegistration,
  unregisterJsSIP,
} from '../lib/jssip-node.mjs';

const CONTENT_TYPE = 'text/plain;charset=utf-8';
const TO_BOB = 'héllo bob ☺ ✓';
const TO_ALICE = 'héllo alice ☺ ✓ (reply)';

function frameKind(client, body) {
  const f = [...client.socket.received].reverse().find((r) => r.text.startsWith('MESSAGE ') && r.text.includes(body));
  return f ? (f.binary ? 'binary' : 'text') : 'unknown';
}

test('JsSIP (Node): register, UTF-8 MESSAGE both ways, re-register, unregister', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();

  const alice = await startJsSIP(tg, 'alice', cleanup);
  const bob = await startJsSIP(tg, 'bob', cleanup);
  assert.equal(alice.ua.isRegistered(), true, 'alice registered');
  assert.equal(bob.ua.isRegistered(), true, 'bob registered');

  // The Outbound shape JsSIP sends by default (a property of the client, recorded here on purpose).
  const reg = lastRegister(alice);
  const contact = rawHeader(reg, 'Contact');
  t.diagnostic(`JsSIP REGISTER Contact: ${contact}`);
  t.diagnostic(`JsSIP REGISTER Supported: ${rawHeader(reg, 'Supported')}`);
  assert.match(contact, /;reg-id=1/, 'JsSIP sends reg-id=1 by default');
  assert.match(contact, /;\+sip\.instance="<urn:uuid:[0-9a-f-]+>"/, 'JsSIP sends +sip.instance by default');
  assert.match(contact, /@[a-z0-9]+\.invalid;transport=ws>/, 'JsSIP Contact host is a random .invalid name');
  assert.match(rawHeader(reg, 'Supported') ?? '', /outbound/);

  // alice -> bob, UTF-8 body: bob receives exactly these characters and the content type.
  const atBob = nextJsSIPMessage(bob, 'bob: the MESSAGE from alice');
  await sendJsSIPMessage(alice, `sip:bob@${tg.domain}`, TO_BOB, CONTENT_TYPE);
  const m1 = await atBob;
  t.diagnostic(`bob got ${JSON.stringify(m1.body)} (${m1.contentType}) in a ${frameKind(bob, TO_BOB)} frame`);
  assert.equal(m1.body, TO_BOB, 'UTF-8 body delivered unchanged');
  assert.equal(m1.contentType, CONTENT_TYPE, 'Content-Type delivered unchanged');
  assert.equal(m1.from, `sip:alice@${tg.domain}`);

  // bob replies.
  const atAlice = nextJsSIPMessage(alice, 'alice: the reply from bob');
  await sendJsSIPMessage(bob, `sip:alice@${tg.domain}`, TO_ALICE, CONTENT_TYPE);
  const m2 = await atAlice;
  assert.equal(m2.body, TO_ALICE);
  assert.equal(m2.contentType, CONTENT_TYPE);
  assert.equal(m2.from, `sip:bob@${tg.domain}`);

  // Refresh while registered: a new REGISTER in the same Call-ID, answered 2xx listing our Contact.
  const refreshed = await refreshJsSIPRegistration(alice);
  t.diagnostic(`alice refresh: ${refreshed.split('\r\n')[0]}; Contact: ${rawHeader(refreshed, 'Contact')}`);
  assert.equal(alice.ua.isRegistered(), true, 'alice still registered after the refresh');

  // Still reachable after the refresh.
  const again = nextJsSIPMessage(alice, 'alice: MESSAGE after her refresh');
  await sendJsSIPMessage(bob, `sip:alice@${tg.domain}`, 'after refresh ✓', CONTENT_TYPE);
  assert.equal((await again).body, 'after refresh ✓');

  // Unregister.
  await unregisterJsSIP(alice);
  await unregisterJsSIP(bob);
  assert.equal(alice.ua.isRegistered(), false);
  assert.equal(bob.ua.isRegistered(), false);
});

test('JsSIP (Node): SERVER REQUIREMENT — a MESSAGE to bob reaches every registered device of bob (two tabs)', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();

  const alice = await startJsSIP(tg, 'alice', cleanup);
  const tab1 = await startJsSIP(tg, 'bob', cleanup, { label: 'bob tab 1' });
  const tab2 = await startJsSIP(tg, 'bob', cleanup, { label: 'bob tab 2' });
  const inst = (c) => /\+sip\.instance="<urn:uuid:([^>]+)>"/.exec(lastRegister(c))[1];
  assert.notEqual(inst(tab1), inst(tab2), 'the two tabs are two Outbound instances (reg-id=1 each)');

  const body = 'to every bob ☺ ✓';
  const at1 = nextJsSIPMessage(tab1, 'bob tab 1: the MESSAGE to bob');
  const at2 = nextJsSIPMessage(tab2, 'bob tab 2: the MESSAGE to bob');
  await sendJsSIPMessage(alice, `sip:bob@${tg.domain}`, body, CONTENT_TYPE);
  // REQUIREMENT (server): a request to an AOR is forked to every registered binding, so both tabs get it.
  const [r1, r2] = await Promise.all([at1, at2]);
  assert.equal(r1.body, body, 'tab 1 received the MESSAGE');
  assert.equal(r2.body, body, 'tab 2 received the MESSAGE');
  assert.equal(r1.contentType, CONTENT_TYPE);
  assert.equal(r2.contentType, CONTENT_TYPE);
});
