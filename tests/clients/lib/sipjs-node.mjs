// SIP.js 0.21 user agents in plain Node (UserAgent + Registerer + Messager), with cleanup on the test.

import './ws-global.mjs';
import { UserAgent, Registerer, RegistererState, Messager, version as SIPJS_VERSION } from 'sip.js';
import { EventEmitter } from 'node:events';
import { withTimeout, once, handled } from './wait.mjs';
import { user } from './env.mjs';

export { UserAgent, Registerer, RegistererState, Messager };

/**
 * Create and start a SIP.js UA for `name` and (by default) register it. Teardown is pushed onto `cleanup`.
 *
 * Shapes: by default SIP.js registers WITHOUT Outbound parameters:
 *   Contact: <sip:RANDOM@RANDOM.invalid;transport=ws>;expires=600     (Supported: outbound, though)
 * With `{ outbound: true }` the Registerer gets `regId: 1`, which adds `;reg-id=1;+sip.instance="<urn:uuid:…>"`.
 * SIP.js accepts a 2xx only if it lists its Contact (matched by contact user) WITH an `expires` param;
 * otherwise it drops the response and goes Unregistered.
 */
export async function startSipJs(target, name, cleanup, { register = true, label = name, outbound = false } = {}) {
  const u = user(target, name);
  const events = new EventEmitter(); // 'message' (Message), 'in'/'out' (raw strings)
  const ua = new UserAgent({
    uri: UserAgent.makeURI(u.aor),
    authorizationUsername: u.name,
    authorizationPassword: u.password,
    transportOptions: { server: target.wsUrl, connectionTimeout: 5, traceSip: false },
    logLevel: 'error',
    userAgentString: `huddle-client-tests SIP.js/${SIPJS_VERSION} (${label})`,
    delegate: {
      onMessage: (message) => {
        message.accept().catch(() => {});
        events.emit('message', message);
      },
    },
  });
  // Record the wire so the tests can show and check the shapes.
  const sent = [];
  const transport = ua.transport;
  const origSend = transport.send.bind(transport);
  transport.send = (msg) => {
    sent.push(msg);
    events.emit('out', msg);
    return origSend(msg);
  };
  const origOnMessage = transport.onMessage;
  transport.onMessage = (msg) => {
    events.emit('in', msg);
    origOnMessage?.(msg);
  };

  const registerer = new Registerer(ua, { expires: 600, ...(outbound ? { regId: 1 } : {}) });
  const client = { ua, registerer, events, sent, user: u, label };
  cleanup.push(() => stopSipJs(client));

  const connecting = `${label}: SIP.js WebSocket connection to ${target.wsUrl}`;
  await withTimeout(ua.start(), connecting).catch((e) => {
    throw new Error(e.message.startsWith(label) ? e.message : `${connecting}: ${e.message}`);
  });
  if (register) await registerSipJs(client);
  return client;
}

/**
 * Send REGISTER (initial or refresh) and wait for SIP.js to accept the 2xx. Fails fast on a rejection, or
 * on the Registerer going Unregistered (what SIP.js does with a 2xx that lacks its Contact or expires).
 */
export async function registerSipJs(client, what = `${client.label}: SIP.js REGISTER accepted (2xx listing its Contact with expires)`) {
  const { registerer } = client;
  let listener;
  const p = new Promise((resolve, reject) => {
    listener = (state) => {
      if (state === RegistererState.Unregistered || state === RegistererState.Terminated) {
        reject(new Error(`${what}: Registerer went ${state} (2xx without our Contact/expires?)`));
      }
    };
    registerer.stateChange.addListener(listener);
    registerer
      .register({
        requestDelegate: {
          onAccept: (response) => resolve(response.message),
          onReject: (response) =>
            reject(new Error(`${what}: rejected ${response.message.statusCode} ${response.message.reasonPhrase}`)),
        },
      })
      .catch(reject);
  });
  try {
    return await withTimeout(p, what);
  } finally {
    registerer.stateChange.removeListener(listener);
  }
}

export async function unregisterSipJs(client) {
  const what = `${client.label}: SIP.js unregister (REGISTER expires=0 answered 2xx)`;
  const p = new Promise((resolve, reject) => {
    client.registerer
      .unregister({
        requestDelegate: {
          onAccept: (response) => resolve(response.message),
          onReject: (response) => reject(new Error(`${what}: rejected ${response.message.statusCode}`)),
        },
      })
      .catch(reject);
  });
  await withTimeout(p, what);
  if (client.registerer.state !== RegistererState.Unregistered) {
    throw new Error(`${what}: state is ${client.registerer.state}`);
  }
}

export async function stopSipJs({ ua, label }) {
  if (ua.state === 'Stopped') return;
  // stop() unregisters (if registered), ends sessions and closes the transport.
  await withTimeout(ua.stop(), `${label}: SIP.js ua.stop()`, 5000);
}

/** Send a MESSAGE and wait for the final 2xx. */
export function sendSipJsMessage(client, targetUri, body, contentType) {
  const what = `${client.label}: final 2xx to MESSAGE sent to ${targetUri}`;
  const p = new Promise((resolve, reject) => {
    new Messager(client.ua, UserAgent.makeURI(targetUri), body, contentType)
      .message({
        requestDelegate: {
          onAccept: (response) => resolve(response.message),
          onReject: (response) =>
            reject(new Error(`${what}: rejected ${response.message.statusCode} ${response.message.reasonPhrase}`)),
        },
      })
      .catch(reject);
  });
  return withTimeout(p, what);
}

/** The next incoming MESSAGE `{ body, contentType, from }`. */
export function nextSipJsMessage(client, what = `${client.label}: incoming MESSAGE`) {
  return handled(once(client.events, 'message', what).then((m) => ({
    body: m.request.body,
    contentType: m.request.getHeader('Content-Type'),
    from: m.request.from.uri.toString(),
    request: m.request,
  })));
}

export function lastSipJsRegister(client) {
  return [...client.sent].reverse().find((m) => m.startsWith('REGISTER '));
}
