// JsSIP 3.13 in plain Node against a Huddle that loads the echo plugin (plugins/echo): a MESSAGE to
// sip:echo@<domain> is answered 2xx by the plugin, and the same text comes back to the sender as a new
// MESSAGE from sip:echo@<domain>, delivered over the sender's WebSocket by the server's location
// service. Needs a server configured with the echo plugin: tests/tests/node_clients.rs starts one
// (it is not part of run-all.sh's default set for that reason).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { target } from '../lib/env.mjs';
import { cleanupAll } from '../lib/wait.mjs';
import { startJsSIP, sendJsSIPMessage, nextJsSIPMessage } from '../lib/jssip-node.mjs';

const CONTENT_TYPE = 'text/plain;charset=utf-8';

test('JsSIP (Node): the echo plugin answers a MESSAGE and sends the text back', async (t) => {
  const cleanup = [];
  t.after(() => cleanupAll(cleanup));
  const tg = target();
  const echo = `sip:echo@${tg.domain}`;

  const alice = await startJsSIP(tg, 'alice', cleanup);
  assert.equal(alice.ua.isRegistered(), true, 'alice registered');

  for (const text of ['héllo echo ☺', 'and once more ✓']) {
    const back = nextJsSIPMessage(alice, `alice: the echo of ${JSON.stringify(text)}`);
    const response = await sendJsSIPMessage(alice, echo, text, CONTENT_TYPE);
    t.diagnostic(`echo answered: ${response.status_code} ${response.reason_phrase}`);
    assert.equal(response.status_code, 200, 'the plugin answers 200');
    const m = await back;
    assert.equal(m.body, text, 'the same text comes back');
    assert.equal(m.contentType, CONTENT_TYPE, 'with the same Content-Type');
    assert.equal(m.from, echo, 'from the address it was sent to');
  }
});
