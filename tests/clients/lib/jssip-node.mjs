// JsSIP user agents in plain Node over lib/jssip-node-socket.mjs, with cleanup registered on the test.

import JsSIP from 'jssip';
import { WsSocket } from './jssip-node-socket.mjs';
import { once, describe, withTimeout, handled } from './wait.mjs';
import { user } from './env.mjs';

export { JsSIP };

/**
 * Create, start and (by default) register a JsSIP UA for `name`. Its teardown (unregister, stop, close the
 * socket) is pushed onto `cleanup`, so it runs even if the test fails.
 *
 * JsSIP's REGISTER, by default, carries the SIP Outbound (RFC 5626) shape:
 *   Contact: <sip:RANDOM@RANDOM.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:…>";expires=600
 *   Supported: path,gruu,outbound
 * Each UA has its own random instance id and contact user, so two UAs of one user are two bindings.
 */
export async function startJsSIP(target, name, cleanup, { register = true, label = name } = {}) {
  const u = user(target, name);
  const socket = new WsSocket(target.wsUrl);
  const ua = new JsSIP.UA({
    sockets: [socket],
    uri: u.aor,
    password: u.password,
    register: false,
    session_timers: false,
    user_agent: `huddle-client-tests JsSIP/${JsSIP.version} (${label})`,
    // Fail fast rather than retry for a minute if the server is not there.
    connection_recovery_min_interval: 2,
    connection_recovery_max_interval: 4,
  });
  const client = { ua, socket, user: u, label };
  cleanup.push(() => stopJsSIP(client));

  ua.start();
  await once(ua, 'connected', `${label}: JsSIP WebSocket connection to ${target.wsUrl}`, {
    failOn: ['disconnected'],
  });
  if (register) {
    const registered = once(ua, 'registered', `${label}: JsSIP 'registered' (REGISTER answered 200)`, {
      failOn: ['registrationFailed'],
    });
    ua.register();
    await registered;
  }
  return client;
}

export async function stopJsSIP({ ua, socket, label }) {
  if (ua.status === 2 /* UA C.STATUS_USER_CLOSED: already stopped */) {
    socket.terminate();
    return;
  }
  try {
    // Unregister first: ua.stop() would do it too, but then waits 2 s for the transaction before closing.
    if (ua.isRegistered()) {
      const gone = once(ua, 'unregistered', `${label}: unregister during cleanup`, { ms: 3000 });
      ua.unregister();
      await gone.catch(() => {});
    }
    // Let JsSIP drop just-finished transactions (Timers J/K are 0 on WS, run from setTimeout); with any
    // left, ua.stop() waits 2 s before closing.
    await new Promise((r) => setTimeout(r, 5));
    if (ua.isConnected()) {
      const closed = once(ua, 'disconnected', `${label}: JsSIP transport closed after ua.stop()`, { ms: 5000 });
      ua.stop();
      await closed;
    } else {
      ua.stop();
    }
  } finally {
    socket.terminate();
  }
}

/** The last REGISTER this client put on the wire. */
export function lastRegister(client) {
  return [...client.socket.sent].reverse().find((m) => m.startsWith('REGISTER '));
}

/** A header value (first occurrence, case-insensitive, compact forms not handled) from a raw message. */
export function rawHeader(raw, name) {
  const re = new RegExp(`^${name}:\\s*(.*)$`, 'im');
  const m = raw && raw.match(re);
  return m ? m[1].trim() : undefined;
}

/** Send a MESSAGE and wait for the final 2xx (rejects with the status on failure). */
export function sendJsSIPMessage(client, targetUri, body, contentType) {
  const done = new Promise((resolve, reject) => {
    client.ua.sendMessage(targetUri, body, {
      contentType,
      eventHandlers: {
        succeeded: (e) => resolve(e.response),
        failed: (e) => reject(new Error(`${client.label}: MESSAGE to ${targetUri} failed: ${describe(e)}`)),
      },
    });
  });
  return withTimeout(done, `${client.label}: final 2xx to MESSAGE sent to ${targetUri}`);
}

/** Resolve with the next incoming MESSAGE `{ body, contentType, from, request }` on this client. */
export function nextJsSIPMessage(client, what = `${client.label}: incoming MESSAGE`) {
  return handled(once(client.ua, 'newMessage', what, { filter: (e) => e.originator === 'remote' }).then((e) => ({
    body: e.request.body,
    contentType: e.request.getHeader('Content-Type'),
    from: e.request.from.uri.toString(),
    request: e.request,
  })));
}

/**
 * Refresh the registration with ua.register() while registered. JsSIP emits 'registered' only on the
 * transition from unregistered, so a refresh is observed on the wire: the next final response to a
 * REGISTER must be 2xx (and JsSIP must not emit 'registrationFailed', which it does when the 200 does
 * not list its own Contact). Resolves with the raw 2xx.
 */
export async function refreshJsSIPRegistration(client) {
  const what = `${client.label}: 2xx to the refreshing REGISTER`;
  const isFinalRegister = (text) =>
    /^SIP\/2\.0 [2-6]\d\d /.test(text) && /^CSeq:\s*\d+\s+REGISTER\s*$/im.test(text) && !/^SIP\/2\.0 40[17] /.test(text);
  let onIn;
  let onFailed;
  const p = new Promise((resolve, reject) => {
    onIn = (text) => isFinalRegister(text) && resolve(text);
    onFailed = (e) => reject(new Error(`${what}: got registrationFailed (${describe(e)})`));
    client.socket.on('in', onIn);
    client.ua.on('registrationFailed', onFailed);
  });
  client.ua.register();
  try {
    const raw = await withTimeout(p, what);
    if (!/^SIP\/2\.0 2\d\d /.test(raw)) throw new Error(`${what}: got ${raw.split('\r\n')[0]}`);
    // JsSIP silently ignores a 2xx that does not list its own Contact (matched by +sip.instance/reg-id,
    // else by contact user), so check that here.
    const reg = lastRegister(client);
    const instance = /\+sip\.instance="<urn:uuid:([^>]+)>"/.exec(reg)?.[1];
    const contactUser = /^Contact:\s*<sip:([^@>]+)@/im.exec(reg)?.[1];
    const listed = (instance && raw.includes(instance)) || (contactUser && raw.includes(`sip:${contactUser}@`));
    if (!listed) throw new Error(`${what}: the 2xx does not list this UA's Contact:\n${raw}`);
    return raw;
  } finally {
    client.socket.off('in', onIn);
    client.ua.off('registrationFailed', onFailed);
  }
}

/** Unregister and wait for JsSIP's 'unregistered'. */
export async function unregisterJsSIP(client) {
  const done = once(client.ua, 'unregistered', `${client.label}: JsSIP 'unregistered' (REGISTER Expires: 0 answered)`);
  client.ua.unregister();
  return done;
}

/**
 * Ends a JsSIP subscription and waits (bounded) for JsSIP to call it terminated. Until then
 * JsSIP keeps its refresh timer (minutes away for a long Expires), which would keep Node from
 * exiting after the tests if the UA closed first.
 */
export async function unsubscribeJsSIP(sub, label) {
  if (sub.state === sub.constructor.C.STATE_TERMINATED) return;
  const ended = once(sub, 'terminated', `${label}: subscription terminated`, { ms: 5000 });
  try {
    sub.terminate();
  } catch (e) {
    ended.catch(() => {});
    throw e;
  }
  await ended;
}
