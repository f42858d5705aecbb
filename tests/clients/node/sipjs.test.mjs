// SIP.js 0.21 in plain Node (global WebSocket from `ws`): registration, UTF-8 MESSAGE, refresh,
// unregister, and MESSAGE interop with JsSIP.
//
// Shapes covered: SIP.js's default REGISTER has NO Outbound parameters
//   Contact: <sip:RANDOM@RANDOM.invalid;transport=ws>;expires=600
// (though it still says `Supported: outbound`); the interop test also registers a SIP.js UA configured
// with `regId: 1` (reg-id + +sip.instance), next to JsSIP which sends those by default.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target } from '../lib/env.mjs';
import { cleanupAll } from '../lib/wait.mjs';
import {
  startSipJs,
  registerSipJs,
  unregisterSipJs,
  sendSipJsMessage,
  nextSipJsMessage,
  lastSipJsRegister,
  RegistererState,
} from '../lib/sipjs-node.mjs';
import { startJsSIP, sendJsSIPMessage, nextJsSIPMessage, rawHeader } from '../lib/jssip-node.mjs';

const CONTENT_TYPE = 'text/plain;charset=utf-8';
const TO_BOB = 'héllo bob ☺ ✓';
const TO_ALICE = 'héllo alice ☺ ✓ (reply)';

test('SIP.js (Node): register, UTF-8 MESSAGE both ways, re-register, unregister', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();

  const alice = await startSipJs(tg, 'alice', cleanup);
  const bob = await startSipJs(tg, 'bob', cleanup);
  assert.equal(alice.registerer.state, RegistererState.Registered);
  assert.equal(bob.registerer.state, RegistererState.Registered);

  const reg = lastSipJsRegister(alice);
  const contact = rawHeader(reg, 'Contact');
  t.diagnostic(`SIP.js REGISTER Contact: ${contact}`);
  assert.doesNotMatch(contact, /reg-id|\+sip\.instance/, 'SIP.js default: no Outbound parameters');
  assert.match(contact, /\.invalid;transport=ws>/);

  const atBob = nextSipJsMessage(bob, 'bob: the MESSAGE from alice');
  await sendSipJsMessage(alice, `sip:bob@${tg.domain}`, TO_BOB, CONTENT_TYPE);
  const m1 = await atBob;
  t.diagnostic(`bob got ${JSON.stringify(m1.body)} (${m1.contentType})`);
  assert.equal(m1.body, TO_BOB, 'UTF-8 body delivered unchanged');
  assert.equal(m1.contentType, CONTENT_TYPE, 'Content-Type delivered unchanged');
  assert.equal(m1.from, `sip:alice@${tg.domain}`);

  const atAlice = nextSipJsMessage(alice, 'alice: the reply from bob');
  await sendSipJsMessage(bob, `sip:alice@${tg.domain}`, TO_ALICE, CONTENT_TYPE);
  const m2 = await atAlice;
  assert.equal(m2.body, TO_ALICE);
  assert.equal(m2.contentType, CONTENT_TYPE);

  // Refresh while registered (same Call-ID, higher CSeq): SIP.js must accept the 2xx again.
  const before = lastSipJsRegister(alice);
  const ok = await registerSipJs(alice, 'alice: SIP.js refresh REGISTER accepted');
  assert.notEqual(lastSipJsRegister(alice), before, 'a new REGISTER was sent');
  assert.equal(rawHeader(lastSipJsRegister(alice), 'Call-ID'), rawHeader(before, 'Call-ID'), 'refresh keeps the Call-ID');
  t.diagnostic(`alice refresh: ${ok.statusCode} ${ok.reasonPhrase}; Contact: ${ok.getHeader('Contact')}`);
  assert.equal(alice.registerer.state, RegistererState.Registered);

  const again = nextSipJsMessage(alice, 'alice: MESSAGE after her refresh');
  await sendSipJsMessage(bob, `sip:alice@${tg.domain}`, 'after refresh ✓', CONTENT_TYPE);
  assert.equal((await again).body, 'after refresh ✓');

  await unregisterSipJs(alice);
  await unregisterSipJs(bob);
});

test('SIP.js <-> JsSIP (Node): UTF-8 MESSAGE both ways between the two libraries', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();

  // carol on SIP.js with Outbound configured (regId: 1); bob on JsSIP (Outbound by default).
  const carol = await startSipJs(tg, 'carol', cleanup, { outbound: true, label: 'carol (SIP.js, regId 1)' });
  const bob = await startJsSIP(tg, 'bob', cleanup, { label: 'bob (JsSIP)' });
  const contact = rawHeader(lastSipJsRegister(carol), 'Contact');
  t.diagnostic(`SIP.js regId:1 REGISTER Contact: ${contact}`);
  assert.match(contact, /;reg-id=1;\+sip\.instance="<urn:uuid:[0-9a-f-]+>"/);

  const atBob = nextJsSIPMessage(bob, 'bob (JsSIP): MESSAGE from carol (SIP.js)');
  await sendSipJsMessage(carol, `sip:bob@${tg.domain}`, TO_BOB, CONTENT_TYPE);
  const m1 = await atBob;
  assert.equal(m1.body, TO_BOB);
  assert.equal(m1.contentType, CONTENT_TYPE);
  assert.equal(m1.from, `sip:carol@${tg.domain}`);

  const atCarol = nextSipJsMessage(carol, 'carol (SIP.js): MESSAGE from bob (JsSIP)');
  await sendJsSIPMessage(bob, `sip:carol@${tg.domain}`, 'héllo carol ☺ ✓', CONTENT_TYPE);
  const m2 = await atCarol;
  assert.equal(m2.body, 'héllo carol ☺ ✓');
  assert.equal(m2.contentType, CONTENT_TYPE);
  assert.equal(m2.from, `sip:bob@${tg.domain}`);
});
