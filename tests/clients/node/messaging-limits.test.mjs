// JsSIP in Node against a Huddle whose messaging plugin has a 2-message quota, a 1-second lifetime and a
// 64-byte body limit (tests/tests/messaging_node.rs starts it): 413 over the limit, 486 with a reason
// when the mailbox is full, and expired messages are dropped (the quota frees up and the user receives
// only what was sent after).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target } from '../lib/env.mjs';
import { cleanupAll } from '../lib/wait.mjs';
import { startJsSIP, nextJsSIPMessage } from '../lib/jssip-node.mjs';
import { sendMessage } from '../lib/messaging.mjs';

const CT = 'text/plain;charset=utf-8';
const LIFETIME_MS = 1000;

test('413 over the body limit, 486 when full, and expiry frees the mailbox', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();
  const carol = `sip:carol@${tg.domain}`;
  const alice = await startJsSIP(tg, 'alice', cleanup);

  const big = await sendMessage(alice, carol, 'é'.repeat(40), CT);
  assert.equal(big.status, 413, `${big.status} ${big.reason}`);
  for (const b of ['old 1', 'old 2']) {
    const r = await sendMessage(alice, carol, b, CT);
    assert.equal(r.status, 202, `${r.status} ${r.reason}`);
  }
  const full = await sendMessage(alice, carol, 'one too many', CT);
  assert.equal(full.status, 486, `${full.status} ${full.reason}`);
  assert.match(full.reason, /Full/);

  // Expiry is the behaviour under test: let the lifetime pass.
  await new Promise((r) => setTimeout(r, LIFETIME_MS * 2.5));
  const fresh = await sendMessage(alice, carol, 'fresh ✓', CT);
  assert.equal(fresh.status, 202, `the expired ones freed the quota: ${fresh.status} ${fresh.reason}`);

  const c = await startJsSIP(tg, 'carol', cleanup, { register: false });
  const first = nextJsSIPMessage(c, 'carol: the first stored MESSAGE');
  c.ua.register();
  // Per-device delivery is in arrival order: had "old 1" survived, it would come first.
  assert.equal((await first).body, 'fresh ✓');
});
