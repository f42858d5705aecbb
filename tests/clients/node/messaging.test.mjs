// JsSIP and SIP.js in plain Node against a Huddle that loads the messaging plugin (plugins/messaging):
// delivery to every registered device, the offline store (202, then delivery on REGISTER in order with the
// original From and Content-Type), UTF-8 bodies, and a positive-delivery notice (RFC 5438) when the sender
// asks. Needs a server with the plugin: tests/tests/messaging_node.rs starts one (not in run-all.sh's
// default set for that reason).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target } from '../lib/env.mjs';
import { cleanupAll, withTimeout } from '../lib/wait.mjs';
import { startJsSIP, nextJsSIPMessage } from '../lib/jssip-node.mjs';
import { startSipJs, registerSipJs } from '../lib/sipjs-node.mjs';
import { sendMessage, collect } from '../lib/messaging.mjs';

const CT = 'text/plain;charset=utf-8';

test('online: a MESSAGE reaches both devices of the user and the sender gets 200', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();
  const alice = await startJsSIP(tg, 'alice', cleanup);
  const bob1 = await startJsSIP(tg, 'bob', cleanup, { label: 'bob tab 1' });
  const bob2 = await startSipJs(tg, 'bob', cleanup, { label: 'bob SIP.js' });
  const got1 = nextJsSIPMessage(bob1);
  const got2 = new Promise((resolve) => bob2.events.once('message', (m) => resolve(m.request)));
  const text = 'hello both of you — ☺ ✓ ünïcödé';
  const r = await sendMessage(alice, `sip:bob@${tg.domain}`, text, CT);
  assert.equal(r.status, 200, `sender answered ${r.status} ${r.reason}`);
  const m1 = await got1;
  const m2 = await withTimeout(got2, 'bob SIP.js: the MESSAGE');
  assert.equal(m1.body, text);
  assert.equal(m2.body, text);
  assert.equal(m1.from, `sip:alice@${tg.domain}`);
  assert.equal(m1.contentType, CT);
});

test('offline: stored with 202, delivered in order on REGISTER with the original From and Content-Type', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();
  const alice = await startJsSIP(tg, 'alice', cleanup);
  const bodies = ['one ☺', 'two — dos', 'three ✓ trois'];
  for (const b of bodies) {
    const r = await sendMessage(alice, `sip:carol@${tg.domain}`, b, CT);
    assert.equal(r.status, 202, `stored: ${r.status} ${r.reason}`);
  }
  // SIP.js this time; its listener is on before it registers.
  const carol = await startSipJs(tg, 'carol', cleanup, { register: false });
  const got = collect(carol.events, 'message', bodies.length, 'carol: the stored MESSAGEs');
  await registerSipJs(carol);
  const msgs = await got;
  assert.deepEqual(
    msgs.map((m) => m.request.body),
    bodies,
    'every stored message once, in order',
  );
  for (const m of msgs) {
    assert.equal(m.request.from.uri.toString(), `sip:alice@${tg.domain}`);
    assert.equal(m.request.getHeader('Content-Type'), CT);
    assert.ok(m.request.getHeader('Date'), 'the original Date');
  }
});

test('IMDN: the sender asking for a positive-delivery notice gets one', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();
  const alice = await startJsSIP(tg, 'alice', cleanup);
  const bob = await startJsSIP(tg, 'bob', cleanup);
  const notice = nextJsSIPMessage(alice, 'alice: the delivery notice');
  const delivered = nextJsSIPMessage(bob);
  const r = await sendMessage(alice, `sip:bob@${tg.domain}`, 'did you get it?', CT, [
    'Disposition-Notification: positive-delivery',
    'Message-ID: node-imdn-1',
  ]);
  assert.equal(r.status, 200);
  assert.equal((await delivered).body, 'did you get it?');
  const n = await notice;
  assert.equal(n.contentType, 'message/imdn+xml');
  assert.match(n.body, /<message-id>node-imdn-1<\/message-id>/);
  assert.match(n.body, /<delivered\/>/);
  assert.equal(n.from, `sip:bob@${tg.domain}`);
});
